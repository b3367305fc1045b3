"""The `loopline` command, on top of everything.

`app` holds the commands and its `registry` group; `servers` the sets of servers they start.
"""
