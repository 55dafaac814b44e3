"""``python -m lorakit`` (and ``torchrun -m lorakit``) run the CLI."""

from lorakit.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
