// vexview reads OpenVEX documents with go-vex, the library vexctl is built on, and prints what
// go-vex understood. It stands in for vexctl, which the Go module proxy does not serve
// (github.com/openvex/vexctl: "403 Forbidden, This module version is not available").
//
//	vexview show FILE          one JSON object per statement, as go-vex parsed it
//	vexview merge FILE FILE... the documents merged by go-vex (what `vexctl merge` prints)
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/openvex/go-vex/pkg/vex"
)

// statementView is go-vex's reading of one statement, flattened for comparison.
type statementView struct {
	Vulnerability string   `json:"vulnerability"`
	Status        string   `json:"status"`
	Justification string   `json:"justification,omitempty"`
	StatusNotes   string   `json:"status_notes,omitempty"`
	Products      []string `json:"products"`
	Subcomponents []string `json:"subcomponents"`
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: vexview show FILE | vexview merge FILE FILE...")
	}
	switch os.Args[1] {
	case "show":
		show(os.Args[2])
	case "merge":
		merge(os.Args[2:])
	default:
		fail("unknown command " + os.Args[1])
	}
}

func show(path string) {
	// vex.Open checks the @context and reads every OpenVEX version go-vex knows.
	doc, err := vex.Open(path)
	if err != nil {
		fail(fmt.Sprintf("go-vex cannot read %s: %v", path, err))
	}
	views := []statementView{}
	for _, s := range doc.Statements {
		view := statementView{
			Vulnerability: string(s.Vulnerability.Name),
			Status:        string(s.Status),
			Justification: string(s.Justification),
			StatusNotes:   s.StatusNotes,
			Products:      []string{},
			Subcomponents: []string{},
		}
		for _, p := range s.Products {
			view.Products = append(view.Products, p.ID)
			for _, sub := range p.Subcomponents {
				view.Subcomponents = append(view.Subcomponents, sub.ID)
			}
		}
		views = append(views, view)
	}
	out := map[string]any{"id": doc.ID, "author": doc.Author, "statements": views}
	print(out)
}

func merge(paths []string) {
	merged, err := vex.MergeFiles(paths)
	if err != nil {
		fail(fmt.Sprintf("go-vex cannot merge %v: %v", paths, err))
	}
	print(merged)
}

func print(v any) {
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	if err := encoder.Encode(v); err != nil {
		fail(err.Error())
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "vexview:", message)
	os.Exit(2)
}
