"""`python -m client.cli ...` is seisctl."""
import sys

from client.cli import main

sys.exit(main())
