"""Conformance of a real daemon to docs/PROTOCOL.md, section by section, through raw ZeroMQ frames only.

Every test here builds its frames with `json` and pyzmq from the spec (tests/conformance/wire.py, which imports
nothing of seisd's client), starts the daemon as a user does (`python -m daemon.server.main`, environment and all),
and kills it with SIGKILL where a section speaks of restarts. Sections covered:

  1  Endpoints and transports: the home rules (SEISD_HOME with "~", XDG_DATA_HOME empty, relative or absolute, a
     home that does not exist yet below a symbolic link), the runtime folder (XDG_RUNTIME_DIR, TMPDIR with a
     trailing slash or missing), mode 0700, no control.sock after a stop; tcp with CURVE (silence without it)
     and the heartbeats status reports                                                     test_s1_endpoints.py
  2  Sockets and framing: DEALER, pipelined requests, REQ, a DEALER's own delimiter         test_s2_s3_s4_frames.py
  3  Requests and replies: header fields, `re` null, `v` the int 1, null args and arrays, the error codes and the
     order of the checks, the session id                                                   test_s2_s3_s4_frames.py
     Retries, restarts and timeouts: a submit key across a lost reply and a kill -9, requests queued in a DEALER
     while no daemon runs, subscriptions and `events` across a restart                     test_s3_retries.py
  4  Binary array frames: descriptors, sizes, counts, arrays ignored where none are taken   test_s2_s3_s4_frames.py
  5  Operations: ping, status (heartbeat, limits), devices, submit (key), jobs, show, logs, events (with and
     without id), cancel (repeated), workers, stop_after_epoch, models.*, survey.*, examples, viewer.*, schema,
     stream.open (key), stream.apply (bit-identical to the model in Python), stream.close (repeated), stream.list
                                                                                           test_s5_operations.py
  6  Events: frames and fields, what is stored (with a seq, read back by `events`) and what is not (seq 0),
     byte-prefix subscriptions                                                             test_s6_events.py
  7  Size limits: too_large for frames, header (re null) and message; status.limits        test_s7_s9_limits_versions.py
  8  Jobs: the `schema` operation accepts every job file of configs/ and of the documents, and refuses the broken
     ones of the tests and documents at the same keys as submit; interrupted and requeued after a kill -9
                                                                                           test_s8_jobs.py
  9  Versioning: bad_version and details.supported, unknown header fields ignored        test_s7_s9_limits_versions.py

Sections 10 and 11 are examples (C programs, tools/raw_client.py): the requests they make are covered above.
"""
