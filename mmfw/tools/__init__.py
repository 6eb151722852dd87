"""Small command-line tools, run as ``python -m mmfw.tools.<name>``."""
