"""``python -m detrc ...`` is the ``detrc`` command."""

from detrc._cli import main

if __name__ == "__main__":
    main()
