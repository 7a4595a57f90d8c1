package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Sample is one line of the Prometheus text format.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Scrape reads a Prometheus text endpoint.
func Scrape(ctx context.Context, url string) ([]Sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	var out []Sample
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if s, ok := parseSample(line); ok {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}

// parseSample reads `name{k="v",...} value [timestamp]`.
func parseSample(line string) (Sample, bool) {
	s := Sample{Labels: map[string]string{}}
	rest := line
	if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
		s.Name = line[:i]
		end, ok := parseLabels(line[i+1:], s.Labels)
		if !ok {
			return s, false
		}
		rest = line[i+1+end:]
	} else if i >= 0 {
		s.Name, rest = line[:i], line[i:]
	}
	fields := strings.Fields(rest)
	if s.Name == "" || len(fields) == 0 {
		return s, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, false
	}
	s.Value = v
	return s, true
}

// parseLabels reads k="v" pairs up to the closing brace and returns the
// offset just past it.
func parseLabels(in string, into map[string]string) (int, bool) {
	i := 0
	for i < len(in) {
		switch in[i] {
		case '}':
			return i + 1, true
		case ',', ' ':
			i++
			continue
		}
		eq := strings.IndexByte(in[i:], '=')
		if eq < 0 || i+eq+1 >= len(in) || in[i+eq+1] != '"' {
			return 0, false
		}
		key := in[i : i+eq]
		i += eq + 2
		var val strings.Builder
		for ; i < len(in) && in[i] != '"'; i++ {
			if in[i] == '\\' && i+1 < len(in) {
				i++
				switch in[i] {
				case 'n':
					val.WriteByte('\n')
					continue
				}
			}
			val.WriteByte(in[i])
		}
		if i >= len(in) {
			return 0, false
		}
		into[key] = val.String()
		i++ // the closing quote
	}
	return 0, false
}

// Sum adds the samples of a metric whose labels include match.
func Sum(samples []Sample, name string, match map[string]string) (float64, bool) {
	total, found := 0.0, false
	for _, s := range samples {
		if s.Name != name {
			continue
		}
		ok := true
		for k, v := range match {
			if s.Labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			total += s.Value
			found = true
		}
	}
	return total, found
}
