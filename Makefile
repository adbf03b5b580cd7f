# emotion_ros: the two commands a newcomer runs (see README.md).
.PHONY: setup demo test bench params clean

setup:
	bash tools/setup_env.sh

demo: setup
	bash tools/run_demo.sh

test: setup
	bash tools/run_tests.sh

bench: setup
	bash tools/run_benchmarks.sh

params:
	bash -c '. tools/env.sh && python tools/gen_params.py'

clean:
	rm -rf build install log demo_output
