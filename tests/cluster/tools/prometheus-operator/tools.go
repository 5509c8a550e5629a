//go:build tools

// Package tools pins the Prometheus Operator commands build-monitoring.sh builds from this
// module: the operator and the config reloader it runs beside each Prometheus.
package tools

import (
	_ "github.com/prometheus-operator/prometheus-operator/cmd/operator"
	_ "github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader"
)
