# emotion_ros: the two commands a newcomer runs (see README.md).
.PHONY: setup demo test test-quick bench params clean

setup:
	bash tools/setup_env.sh

demo: setup
	bash tools/run_demo.sh

test: setup
	bash tools/run_tests.sh

# The suite without the tests marked slow (test/conftest.py SLOW): a check while developing.
test-quick: setup
	bash tools/run_tests.sh -m 'not slow'

bench: setup
	bash tools/run_benchmarks.sh

params:
	bash -c '. tools/env.sh && python tools/gen_params.py'

clean:
	rm -rf build install log demo_output
