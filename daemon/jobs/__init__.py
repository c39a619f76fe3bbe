"""Job kinds. Importing this package registers the built-in kinds (torch-free specs; runners load in executors)."""
from daemon.jobs.registry import (CheckContext, InvalidJob, JobKind, JobSpec, get_kind, kind_names,  # noqa: F401
                                  load_plugins, register, validate_job)

from daemon.jobs import data  # noqa: E402,F401  (registers import and extract)
from daemon.jobs import predict, train  # noqa: E402,F401  (register train and predict)
from daemon.jobs import custom  # noqa: E402,F401  (registers custom: user scripts and notebooks)
