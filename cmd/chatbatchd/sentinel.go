package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/hibiken/asynq"
)

// parseRedis reads -redis: redis://, rediss:// and redis-socket:// as
// asynq.ParseRedisURI does, and Redis Sentinel as
//
//	redis-sentinel://[[user]:password@]host:port[,host:port…][/db]?master=NAME[&sentinel_username=U][&sentinel_password=P]
//
// into an asynq.RedisFailoverClientOpt, whose client (redis.NewFailoverClient)
// is also the one chatbatchd uses for the live stream's pub/sub and the
// rate limiters. The user and password of the URI are the Redis servers'
// (AUTH on the master); sentinels that require a password of their own
// get it from sentinel_password. (asynq.ParseRedisURI reads a sentinel
// URI differently: its password goes to the sentinels only, and it ignores
// the database and accepts a URI without master; chatbatchd does not use
// it for sentinel URIs.) Redis Cluster is not supported.
//
// Errors never repeat the URI, which may hold a password.
func parseRedis(uri string) (asynq.RedisConnOpt, error) {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return nil, fmt.Errorf("not a Redis URI: want redis://host:port/db, rediss://…, redis-socket://PATH or redis-sentinel://host:port,…/db?master=NAME")
	}
	switch strings.ToLower(scheme) {
	case "redis-sentinel":
		return parseSentinel(rest)
	case "redis-cluster", "redis+cluster", "rediss-cluster", "cluster":
		return nil, errors.New("chatbatchd does not support Redis Cluster; use a single Redis (redis://) or Redis Sentinel (redis-sentinel://)")
	case "rediss-sentinel", "redis-sentinels", "sentinel":
		return nil, fmt.Errorf("scheme %q is not supported; Redis Sentinel is redis-sentinel://host:port,…/db?master=NAME (without TLS)", scheme)
	case "redis", "rediss", "redis-socket":
		opt, err := asynq.ParseRedisURI(uri)
		if err != nil {
			// asynq's messages do not contain the URI.
			return nil, err
		}
		return opt, nil
	default:
		return nil, fmt.Errorf("unsupported scheme %q: want redis://, rediss://, redis-socket:// or redis-sentinel://", scheme)
	}
}

// parseSentinel reads what follows "redis-sentinel://".
func parseSentinel(rest string) (asynq.RedisConnOpt, error) {
	const form = "redis-sentinel://[[user]:password@]host:port[,host:port…][/db]?master=NAME"
	rest, rawQuery, _ := strings.Cut(rest, "?")
	rest, _, _ = strings.Cut(rest, "#")
	hostsPart, path, _ := strings.Cut(rest, "/")
	var opt asynq.RedisFailoverClientOpt
	if at := strings.LastIndexByte(hostsPart, '@'); at >= 0 {
		userinfo := hostsPart[:at]
		hostsPart = hostsPart[at+1:]
		user, pass, hasPass := strings.Cut(userinfo, ":")
		var err error
		if opt.Username, err = url.PathUnescape(user); err != nil {
			return nil, fmt.Errorf("redis-sentinel: the user name is not correctly %%-escaped")
		}
		if hasPass {
			if opt.Password, err = url.PathUnescape(pass); err != nil {
				return nil, fmt.Errorf("redis-sentinel: the password is not correctly %%-escaped")
			}
		}
	}
	if hostsPart == "" {
		return nil, fmt.Errorf("redis-sentinel: no sentinel address; want %s", form)
	}
	for _, addr := range strings.Split(hostsPart, ",") {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return nil, fmt.Errorf("redis-sentinel: sentinel address %q is not host:port; want %s", addr, form)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("redis-sentinel: sentinel address %q: port %q is not a number from 1 to 65535", addr, port)
		}
		if !slices.Contains(opt.SentinelAddrs, addr) {
			opt.SentinelAddrs = append(opt.SentinelAddrs, addr)
		}
	}
	if path = strings.TrimSuffix(path, "/"); path != "" {
		db, err := strconv.Atoi(path)
		if err != nil || db < 0 {
			return nil, fmt.Errorf("redis-sentinel: the path must be the database number (/0, /1, …), not %q", "/"+path)
		}
		opt.DB = db
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("redis-sentinel: the query is not correctly %%-escaped")
	}
	for k, v := range q {
		if len(v) > 1 {
			return nil, fmt.Errorf("redis-sentinel: %s is given %d times", k, len(v))
		}
		switch k {
		case "master":
			opt.MasterName = v[0]
		case "sentinel_username":
			opt.SentinelUsername = v[0]
		case "sentinel_password":
			opt.SentinelPassword = v[0]
		default:
			return nil, fmt.Errorf("redis-sentinel: unknown parameter %q; known: master, sentinel_username, sentinel_password", k)
		}
	}
	if opt.MasterName == "" {
		return nil, fmt.Errorf("redis-sentinel: ?master=NAME is required: the name the sentinels monitor the master under; want %s", form)
	}
	return opt, nil
}

// redactRedis is -redis fit for a message: its password replaced by
// "xxxxx", wherever it is.
func redactRedis(uri string) string {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return "-redis"
	}
	authority, tail, hasTail := strings.Cut(rest, "/")
	if !hasTail {
		authority, tail, hasTail = strings.Cut(rest, "?")
		if hasTail {
			tail = "?" + tail
		}
	} else {
		tail = "/" + tail
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		user, _, hasPass := strings.Cut(authority[:at], ":")
		if hasPass {
			user += ":xxxxx"
		}
		authority = user + "@" + authority[at+1:]
	}
	if i := strings.Index(tail, "sentinel_password="); i >= 0 {
		end := strings.IndexByte(tail[i:], '&')
		if end < 0 {
			end = len(tail) - i
		}
		tail = tail[:i] + "sentinel_password=xxxxx" + tail[i+end:]
	}
	return scheme + "://" + authority + tail
}
