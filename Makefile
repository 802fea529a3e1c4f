# Entry points; the scripts in scripts/ do the work and install what they need.
.PHONY: run demo test check setup stack stop status fmt

run:        ## set up, start the stack, run gateway + consumers
	scripts/run.sh
demo:       ## a small flash sale to watch on the dashboard (uses `make run` if it is up)
	scripts/demo.sh
test:       ## set up, start the stack, fmt + clippy + all tests
	scripts/test.sh
check:      ## fmt + clippy + unit and property tests, no stack needed (quick)
	scripts/check.sh
setup:      ## system packages, pulsar-lite, patched pulsar crate
	scripts/setup.sh
stack:      ## start Redis, PostgreSQL, pulsar-lite
	scripts/stack.sh start
stop:       ## stop the stack (and the replicated Redis shapes, when `make test` started them)
	scripts/stack.sh stop redis postgres pulsar redis-cluster redis-sentinel
status:
	scripts/stack.sh status redis postgres pulsar redis-cluster redis-sentinel
fmt:
	cargo fmt --all
