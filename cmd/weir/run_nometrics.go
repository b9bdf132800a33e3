//go:build !weirmetrics

package main

// startMetrics is the integration point for the Prometheus endpoint while
// the metrics code (appliance/metrics.go) is built only with the weirmetrics
// tag: without it, weir runs without an endpoint and says so.
//
// INTEGRATION: when appliance/metrics.go drops its build tag, delete this
// file and the tag line of run_metrics.go.
func (d *daemon) startMetrics() error {
	if addr := d.reloader.Config().Metrics.Listen; addr != "" {
		d.log.Warn("metrics endpoint not served: this weir was built without the metrics code", "listen", addr)
	}
	return nil
}
