"""``python -m service.cli``: the ``densenas`` command."""

from service.cli import app

if __name__ == "__main__":  # pragma: no cover
    app()
