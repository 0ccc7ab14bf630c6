"""``python -m pix2pred``: the command-line interface."""

from pix2pred.cli import main

if __name__ == "__main__":
    main()
