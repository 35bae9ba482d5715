"""The divergence engine: lift and compare shadow answers, learn noise, store masked samples, report and
roll back. `lift` and `differ` are pure; the rest does I/O in the shadow process or the serving process."""
