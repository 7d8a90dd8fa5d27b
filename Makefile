# The two commands of the README. Everything else is a detail of these.
#   make run    install system packages, build, run camhub with its built-in test cameras
#   make test   install what tests need, check formatting and lints, run every test

CARGO ?= cargo

.PHONY: run test deps test-deps

run: deps
	$(CARGO) build --release
	./target/release/camhub demo

test: test-deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	$(CARGO) test --all-targets --locked

deps:
	bash scripts/install-deps.sh

test-deps:
	bash scripts/install-deps.sh --test
