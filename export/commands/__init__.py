"""One module per `python -m export` subcommand; each exposes `register(subparsers)`."""
