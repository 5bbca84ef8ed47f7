package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCountLines(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want int
	}{
		{"empty", "", 0},
		{"blank lines", "\n\n \t\n\r\n", 0},
		{"code", "package p\n\nvar x = 1\n", 2},
		{"no final newline", "package p\nvar x = 1", 2},
		{"line comment", "// a comment\npackage p // trailing\n\t// indented\n", 1},
		{"block comment one line", "/* c */\npackage p\n", 1},
		{"block comment lines", "/*\n a\n\n b\n*/\npackage p\n", 1},
		{"code after block comment", "/* c\n */ var x = 1\n", 1},
		{"code before block comment", "var x = 1 /* c\n c */\n", 1},
		{"two block comments", "/* a */ /* b */\n", 0},
		{"block comment not nested", "/* /* */ x\n", 1},
		{"slashes in string", "package p\nvar s = \"http://x\"\n", 2},
		{"block start in string", "var s = \"/*\"\nvar t = 1\n", 2},
		{"escaped quote", "var s = \"a\\\"//\" // c\n// only comment\n", 1},
		{"rune literals", "var c = '\"'\nvar d = '/'\n// c\n", 2},
		{"escaped rune", "var c = '\\''\n// c\n", 1},
		{"raw string", "var s = `\n// not a comment\n\n/* nor this\n`\n", 4},
		{"comment marker in raw string end", "var s = `/*`\nvar t = 1\n", 2},
		{"unterminated string", "var s = \"abc\n// c\n", 1},
		{"asm", "#include \"textflag.h\"\n\n// func f()\nTEXT ·f(SB),NOSPLIT,$0\n\tRET // return\n", 3},
		{"asm block comment", "/*\n * layout\n */\n\tMOVQ $0, AX\n", 1},
		{"asm string data", "DATA msg<>+0(SB)/8, $\"a//b\"\n", 1},
		{"crlf", "// c\r\nx\r\n\r\n", 1},
	}
	for _, tt := range tests {
		if got := CountLines([]byte(tt.src)); got != tt.want {
			t.Errorf("%s: CountLines(%q) = %d, want %d", tt.name, tt.src, got, tt.want)
		}
	}
}

func TestParseGoMod(t *testing.T) {
	mod, reqs := parseGoMod([]byte(`// comment
module example.com/m // trailing

go 1.26.0

require a.example/x v1.0.0

require (
	b.example/y v0.1.0 // indirect
	"c.example/z" v0.2.0
)

tool b.example/y/cmd
`))
	if mod != "example.com/m" {
		t.Errorf("module = %q", mod)
	}
	if got := strings.Join(reqs, " "); got != "a.example/x b.example/y c.example/z" {
		t.Errorf("requires = %q", got)
	}
}

func TestLongestPrefix(t *testing.T) {
	mods := []string{"a.example/x", "a.example/x/sub", "a.example/xy"}
	for path, want := range map[string]string{
		"a.example/x":       "a.example/x",
		"a.example/x/p":     "a.example/x",
		"a.example/x/sub/q": "a.example/x/sub",
		"a.example/xyz":     "",
		"a.example/xy/p":    "a.example/xy",
		"fmt":               "",
	} {
		if got := longestPrefix(mods, path); got != want {
			t.Errorf("longestPrefix(%q) = %q, want %q", path, got, want)
		}
	}
}

// writeTree creates files (path -> content) under dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCountTree checks the import walk on a small module: build
// constraints, test files, unreferenced packages, a third-party module and
// runtime/goos.
func TestCountTree(t *testing.T) {
	root, cache := t.TempDir(), t.TempDir()
	writeTree(t, root, map[string]string{
		"go.mod": "module m\n\ngo 1.26.0\n\nrequire example.com/dep v1.2.3\n",
		"main.go": "//go:build tamago && amd64\n\npackage main\n\n" +
			"import (\n\t\"fmt\"\n\t\"runtime/goos\"\n\n\t\"example.com/dep/p\"\n\t\"m/a\"\n)\n\n" +
			"func main() { fmt.Println(a.X, p.Y, goos.Z) }\n",
		"host.go":       "//go:build !tamago\n\npackage main\n\nimport _ \"m/hostonly\"\n",
		"main_test.go":  "package main\n\nimport _ \"m/testonly\"\n",
		"a/a.go":        "// Package a.\npackage a\n\n// X is x.\nvar X = 1\n",
		"a/a_linux.go":  "package a\n\nvar L = 1\n",
		"a/a_amd64.s":   "// asm\nTEXT ·f(SB),0,$0\n\tRET\n",
		"a/a_arm64.s":   "TEXT ·f(SB),0,$0\n\tRET\n",
		"a/a_test.go":   "package a\n\nvar T = 1\n",
		"hostonly/h.go": "package hostonly\n",
		"testonly/t.go": "package testonly\n",
		"unused/u.go":   "package unused\n",
	})
	writeTree(t, cache, map[string]string{
		"p/p.go":          "package p\n\nimport \"example.com/dep/internal/q\"\n\nvar Y = q.Q\n",
		"internal/q/q.go": "package q\n\nconst Q = 1\n",
		"goos/goos.go":    "package goos\n\nvar Z = 1\n",
		"unused/u.go":     "package unused\n",
	})
	lookup := func(_, path string) (string, string, error) {
		if path != "example.com/dep" {
			t.Errorf("lookup(%q)", path)
		}
		return "v1.2.3", cache, nil
	}
	r, err := Count(root, "example.com/dep", lookup)
	if err != nil {
		t.Fatal(err)
	}

	got := map[string]*Package{}
	for _, p := range append(append([]*Package{}, r.Own...), r.ThirdParty...) {
		got[p.ImportPath] = p
	}
	want := map[string]struct {
		files string
		lines Lines
	}{
		"m":                          {"main.go", Lines{Go: 8}},
		"m/a":                        {"a.go a_amd64.s", Lines{Go: 2, Asm: 2}},
		"example.com/dep/p":          {"p.go", Lines{Go: 3}},
		"example.com/dep/internal/q": {"q.go", Lines{Go: 2}},
		"example.com/dep/goos":       {"goos.go", Lines{Go: 2}},
	}
	if len(got) != len(want) {
		var names []string
		for n := range got {
			names = append(names, n)
		}
		t.Errorf("packages = %v, want %d", names, len(want))
	}
	for path, w := range want {
		p := got[path]
		if p == nil {
			t.Errorf("package %s not counted", path)
			continue
		}
		if files := strings.Join(p.Files, " "); files != w.files {
			t.Errorf("%s: files %q, want %q", path, files, w.files)
		}
		if p.Lines != w.lines {
			t.Errorf("%s: lines %+v, want %+v", path, p.Lines, w.lines)
		}
	}
	if len(r.Own) != 2 || len(r.ThirdParty) != 3 {
		t.Errorf("own %d, third-party %d packages, want 2, 3", len(r.Own), len(r.ThirdParty))
	}
	if len(r.Modules) != 1 || r.Modules[0].Version != "v1.2.3" {
		t.Errorf("modules %+v", r.Modules)
	}
	if strings.Join(r.Std, " ") != "fmt" {
		t.Errorf("std %v, want [fmt]", r.Std)
	}

	var md, text bytes.Buffer
	r.WriteMarkdown(&md)
	r.WriteText(&text)
	if !strings.Contains(md.String(), "| `m/a` | 2 | 2 | 4 |") {
		t.Errorf("markdown output lacks the m/a row:\n%s", md.String())
	}
	if !strings.Contains(md.String(), "| **total** (2 packages) | **10** | **2** | **12** |") {
		t.Errorf("markdown output lacks the total row:\n%s", md.String())
	}
	if !strings.Contains(text.String(), "total (2 packages)") {
		t.Errorf("text output lacks the total row:\n%s", text.String())
	}
}

// TestRealModule counts tamavisor itself.
func TestRealModule(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	noCache := func(string, string) (string, string, error) { return "", "", nil }
	r, err := Count(root, defaultGOOSPKG, noCache)
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]*Package{}
	for _, p := range r.Own {
		pkgs[p.ImportPath] = p
		for _, f := range p.Files {
			if strings.HasSuffix(f, "_test.go") {
				t.Errorf("%s: counted test file %s", p.ImportPath, f)
			}
		}
	}
	rootPkg := pkgs["tamavisor"]
	if rootPkg == nil || rootPkg.Lines.Go == 0 {
		t.Fatalf("root package not counted: %+v", rootPkg)
	}
	for _, path := range []string{"tamavisor/kernel", "tamavisor/svm", "tamavisor/boot", "tamavisor/internal/x86", "tamavisor/snapshot"} {
		if p := pkgs[path]; p == nil || p.Lines.Total() == 0 {
			t.Errorf("%s not counted", path)
		}
	}
	if p := pkgs["tamavisor/svm"]; p != nil && p.Lines.Asm == 0 {
		t.Errorf("tamavisor/svm: no assembly counted (launch_amd64.s)")
	}
	for path := range pkgs {
		for _, excluded := range []string{"tamavisor/qemu", "tamavisor/cmd", "tamavisor/internal/testrun", "tamavisor/internal/tcb", "tamavisor/guests", "tamavisor/snapshot/filedev"} {
			if path == excluded || strings.HasPrefix(path, excluded+"/") {
				t.Errorf("host-only package %s counted", path)
			}
		}
	}
	if len(r.Missing) == 0 {
		t.Errorf("with no module cache, third-party packages should be reported missing")
	}
}
