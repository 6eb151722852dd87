"""``python -m mmfw.baseline run=<run folder>``: the same as ``mmfw-baseline``."""

from mmfw.baseline.run import main

if __name__ == "__main__":
    main()
