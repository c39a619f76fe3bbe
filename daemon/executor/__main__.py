"""`python -m daemon.executor`: one executor process (daemon/executor/process.py)."""
import sys

from daemon.executor.process import main

sys.exit(main())
