"""``python -m meap ...``: the same as the ``meap`` command."""

from meap.cli import main

if __name__ == "__main__":
    main()
