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
stop:       ## stop the stack (and the local Redis Cluster, when `make test` started it)
	scripts/stack.sh stop redis postgres pulsar redis-cluster
status:
	scripts/stack.sh status redis postgres pulsar redis-cluster
fmt:
	cargo fmt --all
