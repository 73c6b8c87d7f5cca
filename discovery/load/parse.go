package load

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protodelim"
)

// MaxBody is the largest exporter response read. node_exporter with every
// default collector answers in a few hundred KiB; dcgm-exporter in less.
// A longer body is an error, not a truncated parse.
const MaxBody = 4 << 20

// Accept is the Accept header of a scrape: the Prometheus text format
// 0.0.4, which node_exporter and dcgm-exporter both speak. Nothing else is
// asked for, so OpenMetrics and protobuf arrive only from a server that
// ignores the header.
const Accept = `text/plain;version=0.0.4;q=1,*/*;q=0.1`

// ErrTooLarge means an exporter's body exceeded MaxBody.
var ErrTooLarge = fmt.Errorf("body larger than %d bytes", MaxBody)

// Metric names read from the exporters.
const (
	nodeLoad1        = "node_load1"
	nodeCPUSeconds   = "node_cpu_seconds_total"
	nodeMemAvailable = "node_memory_MemAvailable_bytes"
	nodeMemTotal     = "node_memory_MemTotal_bytes"
	dcgmGPUUtil      = "DCGM_FI_DEV_GPU_UTIL" // percent
	dcgmFBUsed       = "DCGM_FI_DEV_FB_USED"  // MiB
	dcgmFBFree       = "DCGM_FI_DEV_FB_FREE"  // MiB
)

var (
	nodeNames = []string{nodeLoad1, nodeCPUSeconds, nodeMemAvailable, nodeMemTotal}
	gpuNames  = []string{dcgmGPUUtil, dcgmFBUsed, dcgmFBFree}
)

// ParseNode reads a node_exporter scrape (body and its Content-Type) and
// returns CPU and Memory; fields whose metrics are absent or unusable are
// nil. At is left zero for the caller to set. An error means the body is
// not a metrics exposition (or is longer than MaxBody).
func ParseNode(body io.Reader, contentType string) (Sample, error) {
	fams, err := decode(body, contentType, nodeNames)
	if err != nil {
		return Sample{}, err
	}
	return nodeSample(fams), nil
}

// ParseGPU reads a dcgm-exporter scrape and returns GPU and GPUMemory of
// the node's least-used GPU (see the package documentation for why).
func ParseGPU(body io.Reader, contentType string) (Sample, error) {
	fams, err := decode(body, contentType, gpuNames)
	if err != nil {
		return Sample{}, err
	}
	return gpuSample(fams), nil
}

// decode parses an exposition into metric families. Text (any version)
// and an unknown or missing Content-Type go to the text parser with UTF-8
// name validation (which accepts every legacy name), after [selectLines]
// has kept only the lines of names; delimited protobuf goes to
// decodeProto. OpenMetrics 1.0 is close enough to text for the gauges and
// counters read here.
func decode(body io.Reader, contentType string, names []string) (map[string]*dto.MetricFamily, error) {
	data, err := io.ReadAll(io.LimitReader(body, MaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading body: %w", err)
	}
	if len(data) > MaxBody {
		return nil, ErrTooLarge
	}
	mediatype, params, _ := mime.ParseMediaType(contentType)
	if mediatype == expfmt.ProtoType {
		if params["proto"] != expfmt.ProtoProtocol || params["encoding"] != "delimited" {
			return nil, fmt.Errorf("unsupported content type %q", contentType)
		}
		return decodeProto(data)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(selectLines(data, names)))
	if err != nil {
		return nil, fmt.Errorf("parsing metrics: %w", err)
	}
	return fams, nil
}

// selectLines keeps, in place, the lines of a text exposition that belong
// to one of names: samples of those names and their HELP and TYPE lines;
// other comments, blank lines and every other metric go. A node_exporter
// with its default collectors sends a few thousand lines of which about
// twenty are read here, and expfmt builds a protobuf message for each line
// it parses, so this cuts the parse to a small fraction. It also means a
// malformed line of an unrelated metric does not spoil the scrape. Every
// text line stands alone (escaped newlines in HELP texts and label values
// are the two bytes \ n), so a subset of lines is a valid exposition
// whenever the whole is.
func selectLines(data []byte, names []string) []byte {
	out := data[:0]
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i+1], data[i+1:]
		} else {
			data = nil
		}
		if lineIsFor(line, names) {
			out = append(out, line...) // out never overtakes the line it copies
		}
	}
	return out
}

// lineIsFor reports whether a text line is a sample, HELP or TYPE of one
// of names.
func lineIsFor(line []byte, names []string) bool {
	line = bytes.TrimLeft(line, " \t")
	if len(line) > 0 && line[0] == '#' {
		f := bytes.Fields(line[1:])
		if len(f) < 2 || (string(f[0]) != "HELP" && string(f[0]) != "TYPE") {
			return false
		}
		line = f[1]
	}
	end := bytes.IndexAny(line, "{ \t\r\n")
	if end < 0 {
		end = len(line)
	}
	name := line[:end]
	for _, n := range names {
		if string(name) == n {
			return true
		}
	}
	return false
}

// decodeProto reads length-delimited MetricFamily messages. It does not
// use expfmt's decoder, which accepts any length prefix (MaxSize -1): a
// prefix claiming gigabytes would make it allocate them. Here no message
// may be longer than the body itself.
func decodeProto(data []byte) (map[string]*dto.MetricFamily, error) {
	r := bytes.NewReader(data)
	opts := protodelim.UnmarshalOptions{MaxSize: int64(len(data))}
	fams := map[string]*dto.MetricFamily{}
	for {
		mf := &dto.MetricFamily{}
		if err := opts.UnmarshalFrom(r, mf); err != nil {
			if errors.Is(err, io.EOF) {
				return fams, nil
			}
			return nil, fmt.Errorf("parsing metrics: %w", err)
		}
		if prev, ok := fams[mf.GetName()]; ok {
			prev.Metric = append(prev.Metric, mf.Metric...)
		} else {
			fams[mf.GetName()] = mf
		}
	}
}

// value is a metric's number whatever its type (exporters declare the
// same figure as gauge, counter or untyped).
func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return math.NaN()
}

// label returns the value of m's label name, and whether it is present.
func label(m *dto.Metric, name string) (string, bool) {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue(), true
		}
	}
	return "", false
}

// single returns the value of a family's first series, or NaN.
func single(fams map[string]*dto.MetricFamily, name string) float64 {
	mf := fams[name]
	if mf == nil || len(mf.GetMetric()) == 0 {
		return math.NaN()
	}
	return value(mf.GetMetric()[0])
}

func nodeSample(fams map[string]*dto.MetricFamily) Sample {
	var s Sample
	cpus := map[string]struct{}{}
	if mf := fams[nodeCPUSeconds]; mf != nil {
		for _, m := range mf.GetMetric() {
			if c, ok := label(m, "cpu"); ok {
				cpus[c] = struct{}{}
			}
		}
	}
	if load := single(fams, nodeLoad1); len(cpus) > 0 && load >= 0 {
		s.CPU = finite(load / float64(len(cpus)))
	}
	avail, total := single(fams, nodeMemAvailable), single(fams, nodeMemTotal)
	if total > 0 && avail >= 0 && !math.IsInf(total, 0) {
		s.Memory = fraction(1 - avail/total)
	}
	return s
}

// device is one GPU (or MIG instance) of a dcgm-exporter scrape.
type device struct {
	util, used, free float64 // NaN when absent
}

func (d device) utilisation() *float64 { return fraction(d.util / 100) }

func (d device) memory() *float64 {
	if !(d.used >= 0 && d.free >= 0 && d.used+d.free > 0) {
		return nil
	}
	return fraction(d.used / (d.used + d.free))
}

// busy is how loaded the device is: the higher of utilisation and memory
// use, over the figures it has; ok is false when it has neither.
func (d device) busy() (b float64, ok bool) {
	b = -1
	if u := d.utilisation(); u != nil {
		b = *u
	}
	if m := d.memory(); m != nil {
		b = max(b, *m)
	}
	return b, b >= 0
}

// deviceKey names a series' device: the gpu index and, for a MIG
// instance, its GPU_I_ID; ok is false for a series without a gpu label.
func deviceKey(m *dto.Metric) (string, bool) {
	g, ok := label(m, "gpu")
	if !ok {
		return "", false
	}
	if i, mig := label(m, "GPU_I_ID"); mig {
		g += "/" + i
	}
	return g, true
}

func gpuSample(fams map[string]*dto.MetricFamily) Sample {
	devs := map[string]*device{}
	var order []string
	get := func(k string) *device {
		d := devs[k]
		if d == nil {
			d = &device{util: math.NaN(), used: math.NaN(), free: math.NaN()}
			devs[k] = d
			order = append(order, k)
		}
		return d
	}
	for _, f := range []struct {
		name string
		set  func(*device, float64)
	}{
		{dcgmGPUUtil, func(d *device, v float64) { d.util = v }},
		{dcgmFBUsed, func(d *device, v float64) { d.used = v }},
		{dcgmFBFree, func(d *device, v float64) { d.free = v }},
	} {
		mf := fams[f.name]
		if mf == nil {
			continue
		}
		for _, m := range mf.GetMetric() {
			if k, ok := deviceKey(m); ok {
				f.set(get(k), value(m))
			}
		}
	}
	// The least busy device; ties go to the lowest index, so that the
	// answer does not depend on map order.
	var best *device
	bestBusy, bestKey := 0.0, ""
	for _, k := range order {
		d := devs[k]
		b, ok := d.busy()
		if !ok {
			continue
		}
		if best == nil || b < bestBusy || (b == bestBusy && lessKey(k, bestKey)) {
			best, bestBusy, bestKey = d, b, k
		}
	}
	if best == nil {
		return Sample{}
	}
	return Sample{GPU: best.utilisation(), GPUMemory: best.memory()}
}

// lessKey orders device keys by numeric gpu index, then as strings.
func lessKey(a, b string) bool {
	na, ea := strconv.Atoi(a)
	nb, eb := strconv.Atoi(b)
	if ea == nil && eb == nil {
		return na < nb
	}
	return a < b
}
