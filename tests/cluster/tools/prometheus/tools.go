//go:build tools

// Package tools pins the Prometheus commands build-monitoring.sh builds from this module:
// the server and promtool, at the release go.mod requires.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
