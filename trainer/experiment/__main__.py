"""`python -m trainer.experiment --out runs/demo` (what `make demo` runs)."""

from trainer.experiment.cli import main

if __name__ == "__main__":
    main()
