"""``python -m bizbus``: the same command line as the ``bizbus`` script."""

from bizbus.cli.main import main

if __name__ == "__main__":
    main()
