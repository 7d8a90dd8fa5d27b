# The two commands of the README. Everything else is a detail of these.
#   make run    install system packages, build, run camhub with its built-in test cameras
#   make test   install what tests need, check formatting and lints, run every test

CARGO ?= cargo

.PHONY: run test deps test-deps vm-test

run: deps
	$(CARGO) build --release
	./target/release/camhub demo

test: test-deps
	@df -h . | tail -1 | awk '{print "disk free before the build: " $$4}'
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	$(CARGO) test --all-targets --locked
	bash scripts/vm/test-v4l2.sh
	bash scripts/vm/test-in-vm.sh chaos

deps:
	bash scripts/install-deps.sh

test-deps:
	bash scripts/install-deps.sh --test

# The tests that run in a qemu VM alone (docs/vm-rig.md): the real-device tests (tests/v4l2.rs: vivid, v4l2loopback,
# udevd) and the netem chaos test (tests/chaos.rs: sch_netem, which the host kernel lacks).
vm-test: test-deps
	bash scripts/vm/test-v4l2.sh
	bash scripts/vm/test-in-vm.sh chaos
