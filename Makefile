# The two commands of the README. Everything else is a detail of these.
#   make run    install system packages, build, run camhub with its built-in test cameras
#   make test   install what tests need, check formatting and lints, run every test

CARGO ?= cargo

.PHONY: run test deps test-deps vm-test

run: deps
	$(CARGO) build --release
	./target/release/camhub demo

test: test-deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	$(CARGO) test --all-targets --locked
	bash scripts/vm/test-v4l2.sh

deps:
	bash scripts/install-deps.sh

test-deps:
	bash scripts/install-deps.sh --test

# The real-device tests (tests/v4l2.rs) alone, in a qemu VM with vivid, v4l2loopback and udevd (docs/vm-rig.md).
vm-test: test-deps
	bash scripts/vm/test-v4l2.sh
