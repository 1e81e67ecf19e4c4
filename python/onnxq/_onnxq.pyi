"""The native half of the onnxq package (Rust, built with maturin)."""

from typing import Any, Callable, List, Optional, Tuple

__version__: str

def main(argv: List[str]) -> int:
    """Run the command line ``argv`` (``argv[0]`` is the program name) as the
    ``onnxq`` binary does: print, and return its exit code (0 ok, 1 a check
    failed, 2 bad input or usage; 130 after Ctrl-C, which ends the process)."""

def run(
    argv: List[str], progress: Optional[Callable[[str, int, int], Any]] = None
) -> Tuple[int, str, str, str]:
    """Run the command line ``argv`` without printing; returns ``(code,
    message, json, text)``: the exit code and error message (0 and ``""`` on
    success), the command's result as JSON (``"null"`` when it has none) and
    the text it prints for people. The GIL is released while it runs;
    ``progress(what, done, total)`` is called after every step of the long
    loops, and an exception it raises is raised when the command ends."""
