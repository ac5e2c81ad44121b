"""Demo and test machinery: a local SMTP sink, a private Redis, a worker starter and the
demo. Outside the runtime package: nothing the worker or the CLI imports loads it."""
