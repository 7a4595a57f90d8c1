package main

// logLevels is the usage of --zap-log-level: what each level of the
// webhook's log shows.
const logLevels = "the webhook's log level. error: what failed (its certificates, the manager); " +
	"info (the default) adds its start and its certificates (waited for, ready); " +
	"5 adds controller-runtime's every admission request and answer. Lines are JSON (see --zap-encoder)"
