"""`python -m loopline.cli`: the same as the `loopline` command."""

from loopline.cli.app import main

main()
