package valuesdoc

import (
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	values := `# The file's own comment, not a value's.

# The image.
image:
  # Where from.
  repository: plexus
  # Which one; a | in a comment.
  tag: ""

# Requests and limits,
# on two lines.
resources:
  requests:
    cpu: 50m

# Every node.
tolerations:
- operator: Exists

# A port.
port: 9091
`
	rows, err := Parse([]byte(values))
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{
		{Key: "image.repository", Default: `"plexus"`, Doc: "Where from."},
		{Key: "image.tag", Default: `""`, Doc: "Which one; a | in a comment."},
		{Key: "resources", Default: `{"requests":{"cpu":"50m"}}`, Doc: "Requests and limits, on two lines."},
		{Key: "tolerations", Default: `[{"operator":"Exists"}]`, Doc: "Every node."},
		{Key: "port", Default: `9091`, Doc: "A port."},
	}
	if !slices.Equal(rows, want) {
		t.Errorf("rows:\n got %q\nwant %q", rows, want)
	}
	table := Table(rows)
	if !strings.Contains(table, "| `image.tag` | `\"\"` | Which one; a \\| in a comment. |\n") {
		t.Errorf("table:\n%s", table)
	}
}

func TestParseUndocumented(t *testing.T) {
	for name, values := range map[string]string{
		"top level":  "# A.\na: 1\nb: 2\n",
		"in a group": "# G.\ng:\n  # X.\n  x: 1\n  y: 2\n",
	} {
		if _, err := Parse([]byte(values)); err == nil || !strings.Contains(err.Error(), "has no comment") {
			t.Errorf("%s: err = %v, want an undocumented value reported", name, err)
		}
	}
}

func TestSplice(t *testing.T) {
	readme := "intro\n" + Begin + "\nold table\n" + End + "\nrest\n"
	got, err := Splice([]byte(readme), "| new |\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := "intro\n" + Begin + "\n| new |\n" + End + "\nrest\n"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, bad := range []string{"no markers", End + Begin, Begin + Begin + End} {
		if _, err := Splice([]byte(bad), "x"); err == nil {
			t.Errorf("Splice(%q) succeeded", bad)
		}
	}
}
