# clickpath: the two commands of the README, and a few helpers.
.PHONY: demo check test build kafka-up kafka-stop bench lint

# Generator + every stage on an embedded bus; nothing to install.
demo:
	cargo run --release -p clickpath-cli --bin clickpath -- demo

# The fast tier: fmt, clippy and every test that needs no broker, browser or Python.
check:
	scripts/check.sh

# The whole suite, with a real Kafka broker installed and started by scripts/kafka.sh.
test:
	scripts/test.sh

build:
	cargo build --release --workspace

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

kafka-up:
	scripts/kafka.sh up

kafka-stop:
	scripts/kafka.sh stop

bench:
	cargo bench -p clickpath-core
