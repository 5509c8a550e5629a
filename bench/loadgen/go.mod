module routemeter.bench/loadgen

go 1.26.0
