"""The ground floor: what every other floor may use, and that uses nothing of Loopline.

`errors` the exceptions a user sees (one clear line each); `io` atomic writes of files
and folders (a temporary path, then a rename) and JSON/Parquet helpers; `seeds` one
seed for Python, NumPy and PyTorch; `params` params.yaml as frozen, strict pydantic
models; `tags` the name of every MLflow tag Loopline writes.
"""
