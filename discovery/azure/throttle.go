package azure

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// ARM reports what is left of its throttling buckets on every response:
//
//	x-ms-ratelimit-remaining-resource: Microsoft.Compute/HighCostGetVMScaleSet3Min;107,Microsoft.Compute/HighCostGetVMScaleSet30Min;527
//	x-ms-ratelimit-remaining-subscription-reads: 11999
//
// When a bucket runs low, the poll loop spreads what is left over the
// bucket's window instead of spending it and being throttled.
const (
	headerRemainingResource = "x-ms-ratelimit-remaining-resource"
	headerRemainingReads    = "x-ms-ratelimit-remaining-subscription-reads"
	// lowWater: at or below this many calls left in a bucket, slow down.
	lowWater = 3
	// subscriptionLowWater is the same for the subscription's reads.
	subscriptionLowWater = 100
	// maxRetryAfter caps a server-sent Retry-After.
	maxRetryAfter = 30 * time.Minute
	// defaultRetryAfter is the wait after a 429 without Retry-After.
	defaultRetryAfter = time.Minute
)

// bucket is one entry of x-ms-ratelimit-remaining-resource.
type bucket struct {
	name      string
	remaining int
	window    time.Duration // parsed from a name ending in <N>Min; 0 if none
}

// parseRemaining parses x-ms-ratelimit-remaining-resource. Malformed
// entries are skipped.
func parseRemaining(h string) []bucket {
	var out []bucket
	for _, part := range strings.Split(h, ",") {
		name, n, ok := strings.Cut(strings.TrimSpace(part), ";")
		if !ok || name == "" {
			continue
		}
		remaining, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil || remaining < 0 {
			continue
		}
		out = append(out, bucket{name: name, remaining: remaining, window: windowOf(name)})
	}
	return out
}

// windowOf reads the window from a bucket name such as
// Microsoft.Compute/HighCostGetVMScaleSet30Min.
func windowOf(name string) time.Duration {
	rest, ok := strings.CutSuffix(name, "Min")
	if !ok {
		return 0
	}
	i := len(rest)
	for i > 0 && rest[i-1] >= '0' && rest[i-1] <= '9' && len(rest)-i < 4 {
		i--
	}
	m, err := strconv.Atoi(rest[i:])
	if err != nil || m <= 0 {
		return 0
	}
	return time.Duration(m) * time.Minute
}

// suggestedWait is how long to wait before the next call so that the
// buckets in h last their window: nothing while every bucket is above the
// low-water mark, else the window shared among the calls left.
func suggestedWait(h http.Header) time.Duration {
	var wait time.Duration
	for _, b := range parseRemaining(h.Get(headerRemainingResource)) {
		if b.remaining > lowWater {
			continue
		}
		w := b.window
		if w == 0 {
			w = time.Minute
		}
		wait = max(wait, w/time.Duration(b.remaining+1))
	}
	if n, err := strconv.Atoi(strings.TrimSpace(h.Get(headerRemainingReads))); err == nil && n >= 0 && n <= subscriptionLowWater {
		wait = max(wait, time.Minute)
	}
	return wait
}

// rateLimits is a pipeline policy that records the longest wait ARM's
// remaining-quota headers suggest, until the poll loop takes it.
type rateLimits struct {
	mu   sync.Mutex // protects wait
	wait time.Duration
}

// Do implements policy.Policy.
func (r *rateLimits) Do(req *policy.Request) (*http.Response, error) {
	resp, err := req.Next()
	if resp != nil {
		if w := suggestedWait(resp.Header); w > 0 {
			r.mu.Lock()
			r.wait = max(r.wait, w)
			r.mu.Unlock()
		}
	}
	return resp, err
}

// take returns and clears the recorded wait.
func (r *rateLimits) take() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.wait
	r.wait = 0
	return w
}

// retryAfter returns how long a throttled (429) call asks to wait: its
// Retry-After in seconds or as an HTTP date, a minute when it has none,
// and 0 when err is not a 429.
func retryAfter(err error, now time.Time) time.Duration {
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusTooManyRequests {
		return 0
	}
	if re.RawResponse == nil {
		return defaultRetryAfter
	}
	return parseRetryAfter(re.RawResponse.Header.Get("Retry-After"), now)
}

// parseRetryAfter parses a Retry-After value; empty or malformed gives the
// default, and the result is capped.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	d := defaultRetryAfter
	if secs, err := strconv.Atoi(v); err == nil {
		if secs >= 0 {
			d = time.Duration(min(secs, int(maxRetryAfter/time.Second))) * time.Second
		}
	} else if t, err := http.ParseTime(v); err == nil {
		d = max(t.Sub(now), 0)
	}
	return min(d, maxRetryAfter)
}
