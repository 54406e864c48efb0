"""`python -m trainer.demo --out runs/demo` (what `make demo` runs)."""

from trainer.demo.cli import main

if __name__ == "__main__":
    main()
