"""The files a job file names (SEG-Y, picks, a user model, a script or notebook, train.init_from): where each one
is, whether the client that submits it may name it, and whether it can be read. One rule for every kind and key,
applied by validate_job to what each spec lists in `input_files()` (and `code_files()`):

1. A relative path starts at the home (executors run there) and must stay inside it once '..' and symbolic links
   are resolved: `models/old.h5` is fine, `../../etc/shadow` and a link in the home pointing out of it are not.
2. An absolute path, resolved the same way, must lie inside one of paths.inputs or the home when paths.inputs is
   set. When it is empty, a local (ipc) client may name any file the daemon's user can read; a tcp client only
   files in the home.
3. A file that passes 1 and 2 must be a regular file that can be read now (workers/regular_files.py): a FIFO, a
   device, a folder or a missing file is refused here, and readers open it again without blocking at run time.
4. A file run as code (`code_files()`: a custom job's script or notebook, a user model) is refused from a tcp
   client unless the setting tcp.allow_code is true.

Refusals by 4, then by 1 and 2, come alone: nothing else is looked at, so a refusal never tells whether a file
the client may not name exists.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from workers.regular_files import regular_file_problem

if TYPE_CHECKING:
    from daemon.kinds.registry import CheckContext, JobSpec


def job_file(ctx: CheckContext, key: str, path: str) -> tuple[Path | None, str | None]:
    """(the file `path` names, resolved; None) when this client may name it, else (None, the problem)."""
    home = ctx.home.resolve()
    given = Path(path).expanduser()
    if not given.is_absolute():
        real = (home / given).resolve()
        if not _inside(real, (home,)):
            return None, (f"{key}: {path} leads outside the home ({home}); a relative path starts at the home and "
                          "must stay inside it (name a file outside the home by its absolute path)")
        return real, None
    real = given.resolve()
    roots = tuple(ctx.input_roots) + (home,) if ctx.input_roots else ((home,) if ctx.remote else ())
    if roots and not _inside(real, roots):
        if ctx.input_roots:
            why = f"{', '.join(map(str, ctx.input_roots))}; setting paths.inputs"
        else:
            why = (f"{home}: paths.inputs is empty, so a client over tcp may name files in the home only; set "
                   "paths.inputs to the folders tcp clients may read")
        return None, f"{key}: {path} is outside the folders this daemon reads from ({why})"
    return real, None


def place_problems(spec: JobSpec, ctx: CheckContext) -> list[str]:
    """Rules 1 and 2 for every file the job names, read or written."""
    return [p for key, path in spec.input_files() + spec.output_files() if (p := job_file(ctx, key, path)[1])]


def read_problems(spec: JobSpec, ctx: CheckContext) -> list[str]:
    """Rule 3 for every file the job names (after place_problems found none)."""
    out = []
    for key, path in spec.input_files():
        real, _ = job_file(ctx, key, path)
        problem = regular_file_problem(real) if real is not None else None
        if problem:
            shown = path if str(real) == path else f"{path} (that is, {real})"
            out.append(f"{key}: {problem.replace(str(real), shown, 1)}")
    return out


def code_problems(spec: JobSpec, ctx: CheckContext) -> list[str]:
    """Rule 4."""
    if not ctx.remote or ctx.allow_remote_code:
        return []
    return [f"{key}: {path} would run as a program with the daemon's rights, which a client over tcp may not ask "
            "for (setting tcp.allow_code is false); submit this job over the local socket, or set tcp.allow_code: "
            "true if you would give every authorised key a shell account" for key, path in spec.code_files()]


def _inside(real: Path, roots: tuple[Path, ...]) -> bool:
    return any(real == root or root in real.parents for root in roots)
