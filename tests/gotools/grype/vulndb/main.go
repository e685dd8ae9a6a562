// Command vulndb writes a small, real grype v6 vulnerability database from
// vexxy's advisory JSON, so tests can run the real grype binary offline
// against known data:
//
//	vulndb -advisories advisories.json -out DIR [-built 2024-01-01T00:00:00Z]
//	GRYPE_DB_CACHE_DIR=DIR GRYPE_DB_AUTO_UPDATE=false grype sbom:FILE
//
// Nothing here writes SQL. Advisories are translated into the record format
// vunnel emits for OS distros and fed through grype's own v6 build pipeline
// (the OS transformer and writer that grype-db uses for the published DB), so
// namespaces, package names and version constraints come out exactly as in
// the real database. The result is then installed with grype's own
// `grype db import` logic (index hydration + import.json checksum), giving
// DIR/6/{vulnerability.db,import.json}.
package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/anchore/grype/grype/db/processors"
	"github.com/anchore/grype/grype/db/provider"
	v6 "github.com/anchore/grype/grype/db/v6"
	v6build "github.com/anchore/grype/grype/db/v6/build"
	ostransform "github.com/anchore/grype/grype/db/v6/build/transformers/os"
	"github.com/anchore/grype/grype/db/v6/installation"
)

// Advisory is one entry of our advisories file.
type Advisory struct {
	ID            string  `json:"id"`
	Distro        string  `json:"distro"`         // "alpine" | "debian"
	DistroVersion string  `json:"distro_version"` // "3.17", "12"
	Package       string  `json:"package"`        // source package name, as the distro tracker keys it
	FixedVersion  *string `json:"fixed_version"`  // nil: no fix, every version is affected
	Severity      string  `json:"severity"`
	Description   string  `json:"description"`
	// Ecosystem would select a non-distro feed (e.g. "npm" with a
	// VulnerableRange); such advisories would be rendered as GHSA records and
	// fed through processors.NewV2GitHubProcessor(github.Transform) the same
	// way OS advisories go through the OS processor below. Not implemented yet.
	Ecosystem string `json:"ecosystem,omitempty"`
}

// osDistros maps our distro names to the vunnel provider name and version format.
var osDistros = map[string]struct{ versionFormat, link string }{
	"alpine": {"apk", "https://security.alpinelinux.org/vuln/"},
	"debian": {"dpkg", "https://security-tracker.debian.org/tracker/"},
}

// vunnel's OS record shape (schema os/1.x), just the fields grype reads.
type osRecord struct {
	Vulnerability osVuln `json:"Vulnerability"`
}

type osVuln struct {
	Name          string    `json:"Name"`
	NamespaceName string    `json:"NamespaceName"`
	Description   string    `json:"Description"`
	Severity      string    `json:"Severity"`
	Link          string    `json:"Link"`
	FixedIn       []osFixIn `json:"FixedIn"`
	CVSS          []any     `json:"CVSS"`
	Metadata      struct{}  `json:"Metadata"`
}

type osFixIn struct {
	Name           string `json:"Name"`
	NamespaceName  string `json:"NamespaceName"`
	Version        string `json:"Version"` // "None" = not fixed (all versions affected)
	VersionFormat  string `json:"VersionFormat"`
	VendorAdvisory struct {
		NoAdvisory      bool  `json:"NoAdvisory"`
		AdvisorySummary []any `json:"AdvisorySummary"`
	} `json:"VendorAdvisory"`
}

const osSchemaURL = "https://raw.githubusercontent.com/anchore/vunnel/main/schema/vulnerability/os/schema-1.1.0.json"

func main() {
	advisories := flag.String("advisories", "", "advisories JSON file")
	out := flag.String("out", "", "grype DB cache dir to write (use as GRYPE_DB_CACHE_DIR)")
	builtFlag := flag.String("built", "", "DB build timestamp, RFC3339 (default: now). Fix it for byte-identical output; "+
		"grype rejects DBs built >5 days ago unless GRYPE_DB_VALIDATE_AGE=false")
	flag.Parse()
	if *advisories == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	built := time.Now().UTC().Round(time.Second) // same rounding grype applies
	if *builtFlag != "" {
		t, err := time.Parse(time.RFC3339, *builtFlag)
		if err != nil {
			log.Fatalf("-built: %v", err)
		}
		built = t.UTC()
	}
	if err := run(*advisories, *out, built); err != nil {
		log.Fatal(err)
	}
}

func run(advisoriesPath, outDir string, built time.Time) error {
	raw, err := os.ReadFile(advisoriesPath)
	if err != nil {
		return err
	}
	var in struct{ Advisories []Advisory }
	if err := json.Unmarshal(raw, &in); err != nil {
		return fmt.Errorf("%s: %w", advisoriesPath, err)
	}
	byProvider, err := osRecords(in.Advisories)
	if err != nil {
		return err
	}

	buildDir, err := os.MkdirTemp("", "vulndb-build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(buildDir)

	// One vunnel "provider" per distro: grype reports it as the match namespace
	// (e.g. alpine:distro:alpine:3.17), as with the published DB.
	var states provider.States
	for _, name := range sortedKeys(byProvider) {
		states = append(states, provider.State{
			Provider:  name,
			Version:   1,
			Processor: "vexxy-vulndb",
			Schema:    provider.Schema{Version: "1.1.0", URL: osSchemaURL},
			Timestamp: built, // provider capture date; fixed so output is deterministic
		})
	}

	w, err := v6build.NewWriter(buildDir, states, false, 0)
	if err != nil {
		return err
	}
	osProcessor := processors.NewV2OSProcessor(ostransform.Transform)
	for _, state := range states {
		doc, err := json.Marshal(byProvider[state.Provider])
		if err != nil {
			return err
		}
		entries, err := osProcessor.Process(bytes.NewReader(doc), state)
		if err != nil {
			return fmt.Errorf("%s: %w", state.Provider, err)
		}
		if err := w.Write(entries...); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil { // drops indexes + VACUUM, like a published DB
		return err
	}

	dbFile := filepath.Join(buildDir, v6.VulnerabilityDBFileName)
	if err := setBuildTimestamp(dbFile, built); err != nil {
		return err
	}

	// Install exactly as `grype db import FILE` does: copy into DIR, hydrate
	// (re-create indexes), write import.json with the xxh64 digest, and move
	// into DIR/6 so grype's hash-on-start check passes.
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	curator, err := installation.NewCurator(installation.Config{DBRootDir: outDir}, nil)
	if err != nil {
		return err
	}
	return curator.Import(dbFile)
}

// osRecords groups advisories into vunnel OS records, one per CVE and distro
// release (like vunnel, one record lists every affected package), sorted so
// the DB is deterministic.
func osRecords(advisories []Advisory) (map[string][]osRecord, error) {
	index := map[string]map[string]*osRecord{} // provider -> namespace+CVE -> record
	for _, a := range advisories {
		if a.Ecosystem != "" {
			return nil, fmt.Errorf("%s: ecosystem %q not supported yet", a.ID, a.Ecosystem)
		}
		d, ok := osDistros[a.Distro]
		if !ok || a.DistroVersion == "" || a.Package == "" || a.ID == "" {
			return nil, fmt.Errorf("unsupported or incomplete advisory: %+v", a)
		}
		ns := a.Distro + ":" + a.DistroVersion // vunnel namespace, e.g. debian:12
		if index[a.Distro] == nil {
			index[a.Distro] = map[string]*osRecord{}
		}
		rec := index[a.Distro][ns+" "+a.ID]
		if rec == nil {
			rec = &osRecord{Vulnerability: osVuln{
				Name: a.ID, NamespaceName: ns, Description: a.Description,
				Severity: cmp.Or(a.Severity, "Unknown"), Link: d.link + a.ID,
				CVSS: []any{},
			}}
			index[a.Distro][ns+" "+a.ID] = rec
		}
		fix := osFixIn{Name: a.Package, NamespaceName: ns, Version: "None", VersionFormat: d.versionFormat}
		if a.FixedVersion != nil && *a.FixedVersion != "" {
			fix.Version = *a.FixedVersion
		}
		fix.VendorAdvisory.AdvisorySummary = []any{}
		rec.Vulnerability.FixedIn = append(rec.Vulnerability.FixedIn, fix)
	}

	out := map[string][]osRecord{}
	for prov, recs := range index {
		for _, key := range sortedKeys(recs) {
			r := *recs[key]
			slices.SortFunc(r.Vulnerability.FixedIn, func(a, b osFixIn) int {
				return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
			})
			out[prov] = append(out[prov], r)
		}
	}
	return out, nil
}

// setBuildTimestamp replaces the time.Now() grype's writer records: grype shows
// it as the DB's "built" time and checks it against max-allowed-built-age.
func setBuildTimestamp(dbFile string, built time.Time) error {
	db, err := v6.NewLowLevelDB(dbFile, false, true, false)
	if err != nil {
		return err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	defer sqlDB.Close()
	return db.Model(&v6.DBMetadata{}).Where("true").Update("build_timestamp", built).Error
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
