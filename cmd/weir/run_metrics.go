package main

import (
	"context"

	"github.com/weirlb/weir/appliance"
)

// startMetrics opens the Prometheus endpoint of [metrics] listen, if set. It
// runs where the appliance was started (the served network namespace), so
// the endpoint's socket lives there too; serving goes on in the background
// until the daemon stops.
func (d *daemon) startMetrics() error {
	addr := d.reloader.Config().Metrics.Listen
	if addr == "" {
		d.log.Info("metrics endpoint disabled ([metrics] listen is empty)")
		return nil
	}
	ln, err := appliance.ListenMetrics(addr)
	if err != nil {
		return err
	}
	reg := appliance.NewMetricsRegistry(appliance.NewMetrics(d.app, d.reloader))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- appliance.ServeMetrics(ctx, ln, reg, d.log) }()
	d.metrics = func() error {
		cancel()
		return <-done
	}
	return nil
}
