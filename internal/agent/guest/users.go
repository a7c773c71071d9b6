package guest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// maxAccountFileSize bounds how much of /etc/passwd or /etc/group is read.
const maxAccountFileSize = 16 << 20

// passwdEntry is one line of /etc/passwd.
type passwdEntry struct {
	Name  string
	UID   uint32
	GID   uint32
	Home  string
	Shell string
}

// groupEntry is one line of /etc/group.
type groupEntry struct {
	Name    string
	GID     uint32
	Members []string
}

// execUser is the identity a process runs as.
type execUser struct {
	Name   string // "" when the uid is not in passwd
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups, primary gid included
	Home   string
}

// errUnknownUser and errUnknownGroup are returned (wrapped) by resolveUser
// when a name is in neither the passwd nor the group file.
var (
	errUnknownUser  = errors.New("unknown user")
	errUnknownGroup = errors.New("unknown group")
	errBadUserSpec  = errors.New("invalid user")
)

// parseID parses a uid or gid; 2^32-1 is (uid_t)-1 and never valid.
func parseID(s string) (uint32, bool) {
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}

// readLines calls fn with each significant line of r: trimmed, not empty, not
// a comment, and not a NIS (+/-) entry.
func readLines(r io.Reader, fn func(line string)) error {
	br := bufio.NewReader(io.LimitReader(r, maxAccountFileSize))
	for {
		line, err := br.ReadString('\n')
		line = strings.TrimSpace(line)
		if line != "" && line[0] != '#' && line[0] != '+' && line[0] != '-' {
			fn(line)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// parsePasswd parses an /etc/passwd file. Lines that are not well formed
// (fewer than four fields, bad ids, empty name) are skipped, as libc does.
func parsePasswd(r io.Reader) ([]passwdEntry, error) {
	var out []passwdEntry
	err := readLines(r, func(line string) {
		f := strings.Split(line, ":")
		if len(f) < 4 || f[0] == "" {
			return
		}
		uid, ok1 := parseID(f[2])
		gid, ok2 := parseID(f[3])
		if !ok1 || !ok2 {
			return
		}
		e := passwdEntry{Name: f[0], UID: uid, GID: gid}
		if len(f) > 5 {
			e.Home = f[5]
		}
		if len(f) > 6 {
			e.Shell = f[6]
		}
		out = append(out, e)
	})
	return out, err
}

// parseGroup parses an /etc/group file; malformed lines are skipped.
func parseGroup(r io.Reader) ([]groupEntry, error) {
	var out []groupEntry
	err := readLines(r, func(line string) {
		f := strings.Split(line, ":")
		if len(f) < 3 || f[0] == "" {
			return
		}
		gid, ok := parseID(f[2])
		if !ok {
			return
		}
		e := groupEntry{Name: f[0], GID: gid}
		if len(f) > 3 {
			for _, m := range strings.Split(f[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					e.Members = append(e.Members, m)
				}
			}
		}
		out = append(out, e)
	})
	return out, err
}

// resolveUser turns a user spec ("", "name", "uid", "name:group", "uid:gid",
// "name:gid", ...) into ids, with docker's rules: "" is root; a numeric uid
// missing from passwd is allowed (gid 0, home /); an unknown name is an
// error. Without an explicit group the supplementary groups are those of
// /etc/group listing the user; with one, only that group.
func resolveUser(spec string, passwd []passwdEntry, groups []groupEntry) (execUser, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if strings.Contains(groupPart, ":") || (hasGroup && (userPart == "" || groupPart == "")) {
		return execUser{}, fmt.Errorf("%w %q", errBadUserSpec, spec)
	}
	if userPart == "" {
		userPart = "0"
	}
	u := execUser{Home: "/"}
	var found *passwdEntry
	for i := range passwd {
		if passwd[i].Name == userPart {
			found = &passwd[i]
			break
		}
	}
	if found == nil {
		uid, ok := parseID(userPart)
		if !ok {
			return execUser{}, fmt.Errorf("%w %q", errUnknownUser, userPart)
		}
		u.UID = uid
		for i := range passwd {
			if passwd[i].UID == uid {
				found = &passwd[i]
				break
			}
		}
	}
	if found != nil {
		u.Name, u.UID, u.GID = found.Name, found.UID, found.GID
		if found.Home != "" {
			u.Home = found.Home
		}
	}
	if hasGroup {
		gid, err := resolveGroup(groupPart, groups)
		if err != nil {
			return execUser{}, err
		}
		u.GID = gid
		u.Groups = []uint32{gid}
		return u, nil
	}
	u.Groups = []uint32{u.GID}
	if u.Name != "" {
		for _, g := range groups {
			if g.GID == u.GID || !slices.Contains(g.Members, u.Name) || slices.Contains(u.Groups, g.GID) {
				continue
			}
			u.Groups = append(u.Groups, g.GID)
		}
	}
	return u, nil
}

func resolveGroup(spec string, groups []groupEntry) (uint32, error) {
	for _, g := range groups {
		if g.Name == spec {
			return g.GID, nil
		}
	}
	if gid, ok := parseID(spec); ok {
		return gid, nil
	}
	return 0, fmt.Errorf("%w %q", errUnknownGroup, spec)
}
