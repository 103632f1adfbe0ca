"""The command line's commands: each module parses its argv and returns an exit code; the work is in
orchestrator/run/, orchestrator/plan/ and below."""
