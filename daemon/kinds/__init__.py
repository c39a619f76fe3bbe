"""Job kinds. Importing this package registers the built-in kinds (torch-free specs; runners load in executors)."""
from daemon.kinds.registry import (CheckContext, InvalidJob, JobKind, JobSpec, TaskResources,  # noqa: F401
                                   get_kind, kind_names, load_plugins, register, validate_job)

from daemon.kinds import data  # noqa: E402,F401  (registers import and extract)
from daemon.kinds import predict, train  # noqa: E402,F401  (register train and predict)
from daemon.kinds import custom  # noqa: E402,F401  (registers custom: user scripts and notebooks)
from daemon.kinds import opendtect  # noqa: E402,F401  (registers opendtect: OpendTect example sets in and out)
from daemon.kinds import suggest  # noqa: E402,F401  (registers suggest: the least sure lines of a prediction)
