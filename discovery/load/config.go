package load

import (
	"fmt"
	"time"
)

// Config is the scraper's part of the YAML section "load"; the section's
// other keys (max, metrics_port, gpu_metrics_port) belong to the parts
// that use them.
type Config struct {
	// Interval between two scrapes of a node. Default 5s.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one scrape (connect, headers and body). Default 2s, and
	// never more than Interval.
	Timeout time.Duration `yaml:"timeout"`
}

// WithDefaults fills zero fields with the documented defaults.
func (c Config) WithDefaults() Config {
	if c.Interval == 0 {
		c.Interval = 5 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = min(2*time.Second, c.Interval)
	}
	return c
}

// Validate reports the first bad setting, naming its key.
func (c Config) Validate() error {
	switch {
	case c.Interval < 0:
		return fmt.Errorf("interval: must be positive, got %s", c.Interval)
	case c.Interval > 0 && c.Interval < 10*time.Millisecond:
		return fmt.Errorf("interval: %s is too short (at least 10ms)", c.Interval)
	case c.Timeout < 0:
		return fmt.Errorf("timeout: must be positive, got %s", c.Timeout)
	case c.Timeout > c.WithDefaults().Interval:
		return fmt.Errorf("timeout: %s is longer than interval %s", c.Timeout, c.WithDefaults().Interval)
	}
	return nil
}

// StaleAfter is the age at which a sample counts as missing: three
// intervals, so that one or two lost scrapes do not drop a node's load.
func (c Config) StaleAfter() time.Duration { return 3 * c.WithDefaults().Interval }
