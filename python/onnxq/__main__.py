"""``python -m onnxq ...``: the ``onnxq`` command."""

from ._cli import main

main()
