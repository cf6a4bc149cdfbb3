package main

import (
	"math"
	"sort"
)

// Config names, in the order tables and charts show them.
const (
	cfgExt4        = "ext4"
	cfgPassthrough = "passthrough"
	cfgBaseline    = "baseline"
	cfgKmsfs       = "kmsfs"
)

var allConfigs = []string{cfgExt4, cfgPassthrough, cfgBaseline, cfgKmsfs}

// configLabel is how tables name each configuration.
var configLabel = map[string]string{
	cfgExt4:        "ext4 (no FUSE)",
	cfgPassthrough: "loopback, passthrough",
	cfgBaseline:    "loopback, daemon copy (baseline)",
	cfgKmsfs:       "kmsfs",
}

// metric describes one measured quantity.
type metric struct {
	key   string
	label string
	unit  string
	// higherBetter: throughputs (true) or times and costs (false).
	higherBetter bool
	// speed metrics are compared as "kmsfs speed / baseline speed" against
	// target; resource metrics as "kmsfs cost / baseline cost".
	speed  bool
	target float64
	// chart is the label of the metric's group in the chart ("" = not
	// charted); "|" separates lines.
	chart string
	// daemonOnly metrics do not exist for ext4.
	daemonOnly bool
	// ref is the configuration kmsfs is compared with; "" is the
	// baseline.
	ref string
}

// refConfig is the configuration m's ratio is taken against.
func (m metric) refConfig() string {
	if m.ref != "" {
		return m.ref
	}
	return cfgBaseline
}

// Targets of the issue, as speed ratios kmsfs/baseline.
const (
	targetSeq  = 0.9
	targetRand = 0.8
	targetTree = 0.85
	// targetColdRead is cold 4 KiB random reads against ext4 on the same
	// disk (not the baseline: a loopback is no limit there).
	targetColdRead = 0.9
)

// Memory targets. The issue asks for memory "flat in file size" and "per
// open file a small constant"; these are the numbers we hold that to.
const (
	// maxHWMGrowthMiB: the daemon's peak RSS after writing and reading the
	// big file may exceed the one after a 1 MiB file by at most this.
	maxHWMGrowthMiB = 16.0
	// maxOpenRSSKiB and maxOpenLockedB: cost of one more open file.
	maxOpenRSSKiB  = 16.0
	maxOpenLockedB = 256.0
)

var speedMetrics = []metric{
	{key: "seq_write", label: "sequential write + fsync", unit: "MB/s", higherBetter: true, speed: true, target: targetSeq, chart: "SEQ|WRITE"},
	{key: "seq_read", label: "sequential read, cold", unit: "MB/s", higherBetter: true, speed: true, target: targetSeq, chart: "SEQ|READ"},
	{key: "randread_1_cold", label: "4 KiB random read, 1 job, cold", unit: "IOPS", higherBetter: true, speed: true, target: targetColdRead, ref: cfgExt4},
	{key: "randread_4_cold", label: "4 KiB random read, 4 jobs, cold", unit: "IOPS", higherBetter: true, speed: true, target: targetColdRead, ref: cfgExt4},
	{key: "randwrite_1_cold", label: "4 KiB random write, 1 job, cold", unit: "IOPS", higherBetter: true, speed: true, target: targetRand},
	{key: "randwrite_4_cold", label: "4 KiB random write, 4 jobs, cold", unit: "IOPS", higherBetter: true, speed: true, target: targetRand},
	{key: "randread_1", label: "4 KiB random read, 1 job, warm", unit: "IOPS", higherBetter: true, speed: true, target: targetRand, chart: "RANDREAD|1 JOB"},
	{key: "randread_4", label: "4 KiB random read, 4 jobs, warm", unit: "IOPS", higherBetter: true, speed: true, target: targetRand, chart: "RANDREAD|4 JOBS"},
	{key: "randwrite_1", label: "4 KiB random write, 1 job, warm", unit: "IOPS", higherBetter: true, speed: true, target: targetRand, chart: "RANDWRITE|1 JOB"},
	{key: "randwrite_4", label: "4 KiB random write, 4 jobs, warm", unit: "IOPS", higherBetter: true, speed: true, target: targetRand, chart: "RANDWRITE|4 JOBS"},
	{key: "tree_cp", label: "tree: copy in (cp -a)", unit: "s", speed: true, target: targetTree, chart: "TREE|CP -A"},
	{key: "tree_find", label: "tree: list (find -ls), cold", unit: "s", speed: true, target: targetTree, chart: "TREE|FIND"},
	{key: "tree_read", label: "tree: read all (tar), cold", unit: "s", speed: true, target: targetTree, chart: "TREE|READ"},
	{key: "tree_rm", label: "tree: delete (rm -rf)", unit: "s", speed: true, target: targetTree, chart: "TREE|RM -RF"},
	{key: "tree_total", label: "tree: total of the four", unit: "s", speed: true, target: targetTree, chart: "TREE|TOTAL"},
}

var resourceMetrics = []metric{
	{key: "peak_rss", label: "daemon peak RSS (VmHWM, all workloads)", unit: "MiB", daemonOnly: true},
	{key: "peak_locked", label: "daemon peak locked memory (VmLck)", unit: "KiB", daemonOnly: true},
	{key: "cpu_seq_write", label: "daemon CPU, sequential write", unit: "s/GiB", daemonOnly: true},
	{key: "cpu_seq_read", label: "daemon CPU, sequential read", unit: "s/GiB", daemonOnly: true},
	{key: "cpu_randread_4", label: "daemon CPU, 4 KiB random read (4 jobs)", unit: "s/GiB", daemonOnly: true},
	{key: "cpu_randwrite_4", label: "daemon CPU, 4 KiB random write (4 jobs)", unit: "s/GiB", daemonOnly: true},
	{key: "hwm_small", label: "peak RSS, 1 MiB file written and read", unit: "MiB", daemonOnly: true},
	{key: "hwm_big", label: "peak RSS, big file written and read", unit: "MiB", daemonOnly: true},
	{key: "hwm_growth", label: "peak RSS growth, 1 MiB → big file", unit: "MiB", daemonOnly: true},
	{key: "open_rss", label: "RSS with N files open", unit: "MiB", daemonOnly: true},
	{key: "open_rss_per_file", label: "RSS per open file", unit: "KiB", daemonOnly: true},
	{key: "open_locked", label: "locked memory with N files open", unit: "KiB", daemonOnly: true},
	{key: "open_locked_per_file", label: "locked memory per open file", unit: "B", daemonOnly: true},
}

// results holds every measurement: config → metric → one value per
// repetition (NaN where a repetition did not measure it).
type results struct {
	Reps   int                             `json:"reps"`
	Values map[string]map[string][]float64 `json:"values"`
}

func newResults(reps int) *results {
	r := &results{Reps: reps, Values: map[string]map[string][]float64{}}
	return r
}

func (r *results) set(cfg, key string, rep int, v float64) {
	m := r.Values[cfg]
	if m == nil {
		m = map[string][]float64{}
		r.Values[cfg] = m
	}
	s := m[key]
	for len(s) < r.Reps {
		s = append(s, math.NaN())
	}
	s[rep] = v
	m[key] = s
}

// setMax records v unless the repetition already holds a larger value.
func (r *results) setMax(cfg, key string, rep int, v float64) {
	if old := r.get(cfg, key, rep); !math.IsNaN(old) && old >= v {
		return
	}
	r.set(cfg, key, rep, v)
}

func (r *results) get(cfg, key string, rep int) float64 {
	s := r.Values[cfg][key]
	if rep >= len(s) {
		return math.NaN()
	}
	return s[rep]
}

// median returns the median of the repetitions that measured cfg/key.
func (r *results) median(cfg, key string) float64 {
	return median(r.Values[cfg][key])
}

// ratio returns the median over repetitions of the per-repetition ratio
// of cfg against m's reference (the baseline, or ext4): speed (higher is better) for speed
// metrics, cost for the others. Ratios taken within one repetition
// compare runs made minutes apart, which cancels much of the noise of a
// shared machine.
func (r *results) ratio(cfg string, m metric) float64 {
	var rs []float64
	for i := 0; i < r.Reps; i++ {
		k, b := r.get(cfg, m.key, i), r.get(m.refConfig(), m.key, i)
		if math.IsNaN(k) || math.IsNaN(b) || k == 0 || b == 0 {
			continue
		}
		if m.speed && !m.higherBetter {
			rs = append(rs, b/k)
		} else {
			rs = append(rs, k/b)
		}
	}
	return median(rs)
}

func median(vs []float64) float64 {
	var s []float64
	for _, v := range vs {
		if !math.IsNaN(v) {
			s = append(s, v)
		}
	}
	if len(s) == 0 {
		return math.NaN()
	}
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
