package flagsdoc

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestTableAndSplice(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("node-name", "host-1", "this node")
	fs.Duration("resync", 30*time.Second, "how often | twice")
	fs.String("config", "", "a file")
	table := Table(fs, map[string]string{"node-name": "`$NODE_NAME`"})
	for _, row := range []string{
		"| `--config` | (none) | a file |",
		"| `--node-name` | `$NODE_NAME` | this node |",
		"| `--resync` | `30s` | how often \\| twice |",
	} {
		if !strings.Contains(table, row+"\n") {
			t.Errorf("table lacks %q:\n%s", row, table)
		}
	}
	if strings.Index(table, "--config") > strings.Index(table, "--resync") {
		t.Error("rows not in name order")
	}
	begin, end := Markers("x")
	page := "intro\n" + begin + "\nold\n" + end + "\nafter\n"
	got, err := Splice([]byte(page), "x", table)
	if err != nil || string(got) != "intro\n"+begin+"\n"+table+end+"\nafter\n" {
		t.Errorf("Splice = %q, %v", got, err)
	}
	if _, err := Splice([]byte(page+begin), "x", table); err == nil {
		t.Error("Splice accepted a page with two begin markers")
	}
	if _, err := Splice([]byte("no markers"), "x", table); err == nil {
		t.Error("Splice accepted a page without markers")
	}
}
