"""Runners of the job kinds whose work is a call into workers/ (import, extract) or a child process (custom)."""
