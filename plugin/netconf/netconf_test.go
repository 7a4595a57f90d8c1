package netconf_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/plexus-cni/plexus/plugin/netconf"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name     string
		data     string
		fallback string
		// expectations when the load succeeds
		wantName    string
		wantVersion string
		wantTypes   []string
		wantWarning string // a substring of the only warning; "" for none
		// expectation when it fails: substrings of the error
		wantErr []string
	}{
		{
			name:        "conflist",
			data:        `{"cniVersion":"0.4.0","name":"net-a","plugins":[{"type":"macvlan","master":"eth0"},{"type":"tuning"}]}`,
			fallback:    "ignored",
			wantName:    "net-a",
			wantVersion: "0.4.0",
			wantTypes:   []string{"macvlan", "tuning"},
		},
		{
			name:        "single conf becomes a one-plugin list",
			data:        `{"cniVersion":"0.3.1","name":"conf-net","type":"bridge","bridge":"br0"}`,
			fallback:    "ignored",
			wantName:    "conf-net",
			wantVersion: "0.3.1",
			wantTypes:   []string{"bridge"},
		},
		{
			name:        "conflist name missing takes the fallback",
			data:        `{"cniVersion":"1.0.0","plugins":[{"type":"macvlan"}]}`,
			fallback:    "from-nad",
			wantName:    "from-nad",
			wantVersion: "1.0.0",
			wantTypes:   []string{"macvlan"},
		},
		{
			name:        "conflist empty name takes the fallback",
			data:        `{"cniVersion":"1.0.0","name":"","plugins":[{"type":"macvlan"}]}`,
			fallback:    "from-nad",
			wantName:    "from-nad",
			wantVersion: "1.0.0",
			wantTypes:   []string{"macvlan"},
		},
		{
			name:        "conf name missing takes the fallback",
			data:        `{"cniVersion":"1.0.0","type":"ipvlan"}`,
			fallback:    "from-nad",
			wantName:    "from-nad",
			wantVersion: "1.0.0",
			wantTypes:   []string{"ipvlan"},
		},
		{
			name:        "conf name null takes the fallback",
			data:        `{"cniVersion":"1.0.0","name":null,"type":"ipvlan"}`,
			fallback:    "from-nad",
			wantName:    "from-nad",
			wantVersion: "1.0.0",
			wantTypes:   []string{"ipvlan"},
		},
		{
			name:     "no name and no fallback",
			data:     `{"cniVersion":"1.0.0","plugins":[{"type":"macvlan"}]}`,
			fallback: "",
			wantErr:  []string{`"name"`},
		},
		{
			name:     "empty name and no fallback",
			data:     `{"cniVersion":"1.0.0","name":"","plugins":[{"type":"macvlan"}]}`,
			fallback: "",
			wantErr:  []string{`"name"`},
		},
		{
			name:        "conflist without cniVersion defaults with a warning",
			data:        `{"name":"n","plugins":[{"type":"macvlan"}]}`,
			fallback:    "x",
			wantName:    "n",
			wantVersion: netconf.DefaultCNIVersion,
			wantTypes:   []string{"macvlan"},
			wantWarning: "cniVersion",
		},
		{
			name:        "conf without cniVersion defaults with a warning",
			data:        `{"name":"n","type":"macvlan"}`,
			fallback:    "x",
			wantName:    "n",
			wantVersion: netconf.DefaultCNIVersion,
			wantTypes:   []string{"macvlan"},
			wantWarning: "cniVersion",
		},
		{
			name:        "empty cniVersion defaults with a warning",
			data:        `{"name":"n","cniVersion":"","plugins":[{"type":"macvlan"}]}`,
			fallback:    "x",
			wantName:    "n",
			wantVersion: netconf.DefaultCNIVersion,
			wantTypes:   []string{"macvlan"},
			wantWarning: "cniVersion",
		},
		{
			name:    "unsupported cniVersion",
			data:    `{"name":"n","cniVersion":"9.9.9","plugins":[{"type":"macvlan"}]}`,
			wantErr: []string{`"cniVersion"`, "9.9.9"},
		},
		{
			name:    "unsupported cniVersion in a conf",
			data:    `{"name":"n","cniVersion":"9.9.9","type":"macvlan"}`,
			wantErr: []string{`"cniVersion"`, "9.9.9"},
		},
		{
			name:    "cniVersion not a string",
			data:    `{"name":"n","cniVersion":1.0,"plugins":[{"type":"macvlan"}]}`,
			wantErr: []string{`"cniVersion"`},
		},
		{
			name:     "name not a string",
			data:     `{"name":42,"cniVersion":"1.0.0","plugins":[{"type":"macvlan"}]}`,
			fallback: "x",
			wantErr:  []string{`"name"`},
		},
		{
			name:     "name not a string in a conf",
			data:     `{"name":["a"],"cniVersion":"1.0.0","type":"macvlan"}`,
			fallback: "x",
			wantErr:  []string{`"name"`},
		},
		{
			name:     "neither plugins nor type",
			data:     `{"name":"n","cniVersion":"1.0.0","master":"eth0"}`,
			fallback: "x",
			wantErr:  []string{`"plugins"`, `"type"`},
		},
		{
			name:     "empty type",
			data:     `{"name":"n","cniVersion":"1.0.0","type":""}`,
			fallback: "x",
			wantErr:  []string{`"plugins"`, `"type"`},
		},
		{
			name:     "plugins not a list",
			data:     `{"name":"n","cniVersion":"1.0.0","plugins":{"type":"macvlan"}}`,
			fallback: "x",
			wantErr:  []string{`"plugins"`},
		},
		{
			name:     "plugins null",
			data:     `{"name":"n","cniVersion":"1.0.0","plugins":null}`,
			fallback: "x",
			wantErr:  []string{`"plugins"`},
		},
		{
			name:     "plugins empty",
			data:     `{"name":"n","cniVersion":"1.0.0","plugins":[]}`,
			fallback: "x",
			wantErr:  []string{`"plugins"`},
		},
		{
			name:     "second plugin without type",
			data:     `{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"macvlan"},{"master":"eth0"}]}`,
			fallback: "x",
			wantErr:  []string{`plugins[1].type`},
		},
		{
			name:     "first plugin with empty type",
			data:     `{"name":"n","cniVersion":"1.0.0","plugins":[{"type":""}]}`,
			fallback: "x",
			wantErr:  []string{`plugins[0].type`},
		},
		{
			name:     "plugin not an object",
			data:     `{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"macvlan"},"tuning"]}`,
			fallback: "x",
			wantErr:  []string{`plugins[1]`},
		},
		{
			name:     "invalid JSON",
			data:     `{"name":"n","cniVersion":"1.0.0","plugins":[`,
			fallback: "x",
			wantErr:  []string{"JSON"},
		},
		{
			name:     "JSON array",
			data:     `[{"type":"macvlan"}]`,
			fallback: "x",
			wantErr:  []string{"JSON"},
		},
		{
			name:     "JSON null",
			data:     `null`,
			fallback: "x",
			wantErr:  []string{`"type"`},
		},
		{
			name:     "empty input",
			data:     ``,
			fallback: "x",
			wantErr:  []string{"JSON"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := netconf.Load([]byte(tt.data), tt.fallback)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Load succeeded with list %+v, want an error", n.List)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not mention %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if n.List.Name != tt.wantName {
				t.Errorf("name = %q, want %q", n.List.Name, tt.wantName)
			}
			if n.List.CNIVersion != tt.wantVersion {
				t.Errorf("cniVersion = %q, want %q", n.List.CNIVersion, tt.wantVersion)
			}
			var types []string
			for _, p := range n.List.Plugins {
				types = append(types, p.Network.Type)
			}
			if !reflect.DeepEqual(types, tt.wantTypes) {
				t.Errorf("plugin types = %q, want %q", types, tt.wantTypes)
			}
			switch {
			case tt.wantWarning == "" && len(n.Warnings) != 0:
				t.Errorf("warnings = %q, want none", n.Warnings)
			case tt.wantWarning != "" && (len(n.Warnings) != 1 || !strings.Contains(n.Warnings[0], tt.wantWarning)):
				t.Errorf("warnings = %q, want one mentioning %q", n.Warnings, tt.wantWarning)
			}
			// The stored bytes are what delegates get at ADD and DEL: they
			// must parse back to the same list.
			var stored struct {
				Name       string            `json:"name"`
				CNIVersion string            `json:"cniVersion"`
				Plugins    []json.RawMessage `json:"plugins"`
			}
			if err := json.Unmarshal(n.List.Bytes, &stored); err != nil {
				t.Fatalf("list bytes %s: %v", n.List.Bytes, err)
			}
			if stored.Name != tt.wantName || stored.CNIVersion != tt.wantVersion || len(stored.Plugins) != len(tt.wantTypes) {
				t.Errorf("list bytes %s do not match name %q, version %q, %d plugins", n.List.Bytes, tt.wantName, tt.wantVersion, len(tt.wantTypes))
			}
		})
	}
}

// A single conf keeps all of its own fields as the one plugin of the list.
func TestLoadConfKeepsPluginFields(t *testing.T) {
	n, err := netconf.Load([]byte(`{"cniVersion":"1.1.0","name":"c","type":"macvlan","master":"eth1","mode":"bridge","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}`), "x")
	if err != nil {
		t.Fatal(err)
	}
	if len(n.List.Plugins) != 1 {
		t.Fatalf("got %d plugins, want 1", len(n.List.Plugins))
	}
	p := n.List.Plugins[0]
	if p.Network.Type != "macvlan" || p.Network.IPAM.Type != "host-local" {
		t.Errorf("plugin type %q ipam %q, want macvlan, host-local", p.Network.Type, p.Network.IPAM.Type)
	}
	var fields map[string]interface{}
	if err := json.Unmarshal(p.Bytes, &fields); err != nil {
		t.Fatal(err)
	}
	if fields["master"] != "eth1" || fields["mode"] != "bridge" {
		t.Errorf("plugin bytes %s lost master/mode", p.Bytes)
	}
}

func TestCapabilities(t *testing.T) {
	tests := []struct {
		name string
		data string
		want map[string]bool
	}{
		{
			name: "none",
			data: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"}]}`,
			want: map[string]bool{},
		},
		{
			name: "union, false ignored",
			data: `{"cniVersion":"1.0.0","name":"n","plugins":[
				{"type":"a","capabilities":{"ips":true,"mac":false}},
				{"type":"b","capabilities":{"portMappings":true,"bandwidth":false}}]}`,
			want: map[string]bool{"ips": true, "portMappings": true},
		},
		{
			name: "true in one plugin wins over false in another",
			data: `{"cniVersion":"1.0.0","name":"n","plugins":[
				{"type":"a","capabilities":{"mac":false}},
				{"type":"b","capabilities":{"mac":true}}]}`,
			want: map[string]bool{"mac": true},
		},
		{
			name: "single conf",
			data: `{"cniVersion":"1.0.0","name":"n","type":"a","capabilities":{"ips":true,"mac":true,"infinibandGUID":false}}`,
			want: map[string]bool{"ips": true, "mac": true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := netconf.Load([]byte(tt.data), "x")
			if err != nil {
				t.Fatal(err)
			}
			if got := n.Capabilities(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Capabilities() = %v, want %v", got, tt.want)
			}
		})
	}
}

// writeFiles makes a CNI conf dir; a value of "" makes a subdirectory.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if content == "" {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func conflist(name, typ string) string {
	return `{"cniVersion":"1.0.0","name":"` + name + `","plugins":[{"type":"` + typ + `"}]}`
}

func conf(name, typ string) string {
	return `{"cniVersion":"1.0.0","name":"` + name + `","type":"` + typ + `"}`
}

func TestFindFile(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		want     string
		wantFile string // base name
		wantType string
		wantErr  []string
	}{
		{
			name: "matching name",
			files: map[string]string{
				"10-a.conflist": conflist("a", "bridge"),
				"20-b.conflist": conflist("b", "macvlan"),
			},
			want: "b", wantFile: "20-b.conflist", wantType: "macvlan",
		},
		{
			name: "two files with one name: lexically first wins",
			files: map[string]string{
				"20-dup.conf":     conf("dup", "second"),
				"10-dup.conflist": conflist("dup", "first"),
				"30-dup.json":     conf("dup", "third"),
			},
			want: "dup", wantFile: "10-dup.conflist", wantType: "first",
		},
		{
			name: "lexical order, not extension order",
			files: map[string]string{
				"a.json":     conf("dup", "first"),
				"b.conflist": conflist("dup", "second"),
			},
			want: "dup", wantFile: "a.json", wantType: "first",
		},
		{
			name: "broken file skipped",
			files: map[string]string{
				"10-broken.conf":   `{"name":"good",`,
				"20-good.conflist": conflist("good", "ipvlan"),
			},
			want: "good", wantFile: "20-good.conflist", wantType: "ipvlan",
		},
		{
			name: "invalid but parseable file skipped",
			files: map[string]string{
				"10-bad.conflist":  `{"cniVersion":"9.9.9","name":"good","plugins":[{"type":"x"}]}`,
				"20-good.conflist": conflist("good", "ipvlan"),
			},
			want: "good", wantFile: "20-good.conflist", wantType: "ipvlan",
		},
		{
			name:  ".conf read",
			files: map[string]string{"x.conf": conf("n", "t-conf")},
			want:  "n", wantFile: "x.conf", wantType: "t-conf",
		},
		{
			name:  ".conflist read",
			files: map[string]string{"x.conflist": conflist("n", "t-conflist")},
			want:  "n", wantFile: "x.conflist", wantType: "t-conflist",
		},
		{
			name:  ".json read",
			files: map[string]string{"x.json": conf("n", "t-json")},
			want:  "n", wantFile: "x.json", wantType: "t-json",
		},
		{
			name: "file without a name is named after its base name",
			files: map[string]string{
				"30-noname.conf": `{"cniVersion":"1.0.0","type":"bridge"}`,
			},
			want: "30-noname", wantFile: "30-noname.conf", wantType: "bridge",
		},
		{
			name: "other extensions ignored",
			files: map[string]string{
				"a.yaml":      conf("n", "yaml"),
				"b.conf.bak":  conf("n", "bak"),
				"c.txt":       conf("n", "txt"),
				"d":           conf("n", "none"),
				"e.conflist~": conflist("n", "tilde"),
				"z.conf":      conf("other", "bridge"),
			},
			want:    "n",
			wantErr: []string{`"n"`},
		},
		{
			name: "directories ignored",
			files: map[string]string{
				"a.conf":   "",
				"b.conf":   conf("n", "file"),
				"c.json":   "",
				"d.config": conf("n", "nope"),
			},
			want: "n", wantFile: "b.conf", wantType: "file",
		},
		{
			name: "no match names the wanted name and the broken file",
			files: map[string]string{
				"10-broken.conf": `{not json`,
				"20-a.conflist":  conflist("a", "bridge"),
			},
			want:    "wanted",
			wantErr: []string{`"wanted"`, "10-broken.conf"},
		},
		{
			name:    "empty dir",
			files:   map[string]string{},
			want:    "wanted",
			wantErr: []string{`"wanted"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, tt.files)
			n, path, err := netconf.FindFile(dir, tt.want, nil)
			checkFound(t, dir, n, path, err, tt.want, tt.wantFile, tt.wantType, tt.wantErr)
		})
	}
}

func checkFound(t *testing.T, dir string, n *netconf.Network, path string, err error, wantName, wantFile, wantType string, wantErr []string) {
	t.Helper()
	if wantErr != nil {
		if err == nil {
			t.Fatalf("found %s (%s), want an error", path, n.List.Name)
		}
		for _, w := range wantErr {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
		return
	}
	if err != nil {
		t.Fatalf("error: %v", err)
	}
	if want := filepath.Join(dir, wantFile); path != want {
		t.Errorf("path = %s, want %s", path, want)
	}
	if wantName != "" && n.List.Name != wantName {
		t.Errorf("name = %q, want %q", n.List.Name, wantName)
	}
	if len(n.List.Plugins) != 1 || n.List.Plugins[0].Network.Type != wantType {
		t.Errorf("plugins = %+v, want one of type %q", n.List.Plugins, wantType)
	}
}

func TestFindDefault(t *testing.T) {
	files := map[string]string{
		"00-broken.conf":     `{"cniVersion":"1.0.0","name":"broken"`,
		"05-plexus.conflist": conflist("plexus", "plexus"),
		"10-a.conflist":      conflist("a", "bridge"),
		"20-b.conf":          conf("b", "macvlan"),
		"README.md":          conf("readme", "nope"),
	}
	notPlexus := func(path string, _ *netconf.Network) bool { return filepath.Base(path) == "05-plexus.conflist" }
	tests := []struct {
		name       string
		files      map[string]string
		want       string
		isExcluded func(string, *netconf.Network) bool
		wantFile   string
		wantType   string
		wantErr    []string
	}{
		{
			name:     "lexically first loadable",
			files:    files,
			wantFile: "05-plexus.conflist", wantType: "plexus",
		},
		{
			name:       "excluded file skipped",
			files:      files,
			isExcluded: notPlexus,
			wantFile:   "10-a.conflist", wantType: "bridge",
		},
		{
			name:       "everything before b excluded",
			files:      files,
			isExcluded: func(p string, _ *netconf.Network) bool { return filepath.Base(p) < "20" },
			wantFile:   "20-b.conf", wantType: "macvlan",
		},
		{
			name:       "with a name, the file of that name",
			files:      files,
			want:       "b",
			isExcluded: notPlexus,
			wantFile:   "20-b.conf", wantType: "macvlan",
		},
		{
			// plexus's own conflist carries the default network's name and
			// sorts first: a lookup by name must skip it too.
			name: "with a name, excluded files skipped",
			files: map[string]string{
				"00-plexus.conflist": conflist("b", "plexus"),
				"20-b.conf":          conf("b", "macvlan"),
			},
			want:       "b",
			isExcluded: func(_ string, n *netconf.Network) bool { return n.List.Plugins[0].Network.Type == "plexus" },
			wantFile:   "20-b.conf", wantType: "macvlan",
		},
		{
			name:    "with a name nothing has",
			files:   files,
			want:    "missing",
			wantErr: []string{`"missing"`, "00-broken.conf"},
		},
		{
			name:       "everything excluded",
			files:      files,
			isExcluded: func(string, *netconf.Network) bool { return true },
			wantErr:    []string{"no default network"},
		},
		{
			name:    "only broken files",
			files:   map[string]string{"a.conf": "{", "b.conflist": `{"name":"x","plugins":[]}`},
			wantErr: []string{"no default network"},
		},
		{
			name:    "empty dir",
			files:   map[string]string{},
			wantErr: []string{"no default network"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, tt.files)
			n, path, err := netconf.FindDefault(dir, tt.want, tt.isExcluded)
			checkFound(t, dir, n, path, err, tt.want, tt.wantFile, tt.wantType, tt.wantErr)
		})
	}
}

func TestFindMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	if _, _, err := netconf.FindFile(dir, "a", nil); err == nil {
		t.Error("FindFile in a missing dir succeeded")
	}
	if _, _, err := netconf.FindDefault(dir, "", nil); err == nil {
		t.Error("FindDefault in a missing dir succeeded")
	}
}

func TestCacheParsesEachDefinitionOnce(t *testing.T) {
	c := &netconf.Cache{Size: 2}
	named := []byte(`{"cniVersion":"1.0.0","name":"a","type":"macvlan","master":"eth0"}`)
	first, err := c.Load(named, "x")
	if err != nil {
		t.Fatal(err)
	}
	direct, err := netconf.Load(named, "x")
	if err != nil {
		t.Fatal(err)
	}
	if string(first.List.Bytes) != string(direct.List.Bytes) || first.List.Name != "a" {
		t.Errorf("cached load %s, want Load's %s", first.List.Bytes, direct.List.Bytes)
	}
	// The same bytes again, in another slice: the same network, not parsed again.
	again, err := c.Load(append([]byte(nil), named...), "x")
	if err != nil || again != first {
		t.Errorf("second load %p (%v), want the first's %p", again, err, first)
	}

	// The fallback name is part of what was loaded.
	unnamed := []byte(`{"cniVersion":"1.0.0","type":"macvlan","master":"eth0"}`)
	for _, name := range []string{"b", "c", "b"} {
		n, err := c.Load(unnamed, name)
		if err != nil || n.List.Name != name {
			t.Fatalf("unnamed with fallback %q: %+v, %v", name, n, err)
		}
	}
	// Errors are returned every time and not kept; the size is a bound.
	for i := 0; i < 2; i++ {
		if _, err := c.Load([]byte(`{"name":"bad"}`), "x"); err == nil {
			t.Fatal("a config without type or plugins loaded")
		}
	}
	if _, err := c.Load([]byte(`{"cniVersion":"1.0.0","name":"d","type":"bridge"}`), ""); err != nil {
		t.Fatal(err)
	}
	if c.Len() != 2 {
		t.Errorf("cache holds %d networks, want its size 2", c.Len())
	}
	if n, err := c.Load(named, "x"); err != nil || n.List.Name != "a" {
		t.Errorf("after evictions: %+v, %v", n, err)
	}
}
