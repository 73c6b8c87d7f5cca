package azure

import (
	"net/http"
	"testing"
	"time"
)

func TestSuggestedWait(t *testing.T) {
	tests := []struct {
		resource, reads string
		want            time.Duration
	}{
		{"", "", 0},
		{"Microsoft.Compute/HighCostGetVMScaleSet3Min;107,Microsoft.Compute/HighCostGetVMScaleSet30Min;527", "11999", 0},
		{"Microsoft.Compute/HighCostGetVMScaleSet3Min;0,Microsoft.Compute/HighCostGetVMScaleSet30Min;527", "", 3 * time.Minute},
		{"Microsoft.Compute/HighCostGetVMScaleSet3Min;50,Microsoft.Compute/HighCostGetVMScaleSet30Min;2", "", 10 * time.Minute},
		{"Microsoft.Compute/PutVM3Min;3", "", 45 * time.Second},
		{"Microsoft.Compute/Unknown;0", "", time.Minute},
		{"garbage;;;,;x,Microsoft.Compute/A3Min;-1", "", 0},
		{"", "42", time.Minute},
	}
	for _, tc := range tests {
		h := http.Header{}
		h.Set(headerRemainingResource, tc.resource)
		h.Set(headerRemainingReads, tc.reads)
		if got := suggestedWait(h); got != tc.want {
			t.Errorf("suggestedWait(%q, reads %q) = %s, want %s", tc.resource, tc.reads, got, tc.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	tests := map[string]time.Duration{
		"17": 17 * time.Second, "0": 0, "": time.Minute, "soon": time.Minute, "-5": time.Minute,
		"99999999": maxRetryAfter, now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat): 0,
	}
	for in, want := range tests {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", in, got, want)
		}
	}
}

// FuzzThrottleHeaders feeds ARM's throttling headers, which come from the
// network, to their parsers: no panic, and never a negative or unbounded
// wait.
func FuzzThrottleHeaders(f *testing.F) {
	f.Add("Microsoft.Compute/HighCostGetVMScaleSet3Min;107,Microsoft.Compute/HighCostGetVMScaleSet30Min;527", "120")
	f.Add("a;0,b9999Min;1", "Wed, 21 Oct 2015 07:28:00 GMT")
	f.Add(";;,,;", "-1")
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, resource, retry string) {
		h := http.Header{}
		h.Set(headerRemainingResource, resource)
		h.Set(headerRemainingReads, retry)
		if w := suggestedWait(h); w < 0 || w > 9999*time.Minute {
			t.Fatalf("suggestedWait = %s", w)
		}
		if d := parseRetryAfter(retry, now); d < 0 || d > maxRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %s", retry, d)
		}
	})
}
