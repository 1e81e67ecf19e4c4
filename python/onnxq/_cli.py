"""The ``onnxq`` command the Python package installs: the same command line
as the Rust binary, run in-process by the extension module."""

import sys

from . import _onnxq


def main() -> None:
    sys.exit(_onnxq.main(["onnxq", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
