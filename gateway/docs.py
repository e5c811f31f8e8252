"""The interactive docs page: the served OpenAPI document, browsable and callable, with no CDN.

Self-contained (no script or style from elsewhere), so it works on an offline machine and under
a strict content security policy: operations grouped by tag, each with its parameters, request
schema and a form that sends the request through the gateway with an optional bearer token.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>finmesh API</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0; display: flex; height: 100vh; }
nav { width: 22rem; overflow-y: auto; border-right: 1px solid #ddd; padding: .5rem; }
main { flex: 1; overflow-y: auto; padding: 1rem 2rem; }
nav h3 { font-size: .85rem; margin: .8rem 0 .2rem; color: #555; }
nav a { display: block; font-size: .8rem; padding: .1rem .3rem; color: #222; text-decoration: none; }
nav a:hover { background: #eef; }
.m { display: inline-block; width: 3.6rem; font-weight: 600; }
.GET { color: #0a6; } .POST { color: #06c; } .PATCH { color: #a60; }
.DELETE { color: #c22; } .PUT { color: #608; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: .8rem; }
input, textarea { font-family: monospace; width: 100%; box-sizing: border-box; }
label { display: block; margin-top: .4rem; font-size: .85rem; }
#filter { width: 100%; margin-bottom: .4rem; }
</style>
</head>
<body>
<nav><input id="filter" placeholder="filter operations"><div id="list">loading /openapi.json ...</div></nav>
<main id="op"><h1>finmesh API</h1><p>Choose an operation.</p></main>
<script>
let doc = null;
const el = (tag, attrs = {}, text = "") => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
};
function operations() {
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(item)) ops.push({ path, method: method.toUpperCase(), op });
  return ops;
}
function renderList() {
  const filter = document.getElementById("filter").value.toLowerCase();
  const list = document.getElementById("list");
  list.replaceChildren();
  const byTag = {};
  for (const entry of operations()) {
    const text = (entry.method + " " + entry.path + " " + (entry.op.summary || "")).toLowerCase();
    if (filter && !text.includes(filter)) continue;
    (byTag[entry.op.tags[0]] ||= []).push(entry);
  }
  for (const tag of Object.keys(byTag).sort()) {
    list.append(el("h3", {}, tag));
    for (const entry of byTag[tag]) {
      const link = el("a", { href: "#" + entry.op.operationId });
      link.append(el("span", { class: "m " + entry.method }, entry.method), entry.path);
      link.onclick = () => renderOperation(entry);
      list.append(link);
    }
  }
}
function renderOperation({ path, method, op }) {
  const main = document.getElementById("op");
  main.replaceChildren();
  const title = el("h2");
  title.append(el("span", { class: "m " + method }, method), path);
  main.append(title, el("p", {}, op.summary || ""), el("pre", {}, op.description || ""));
  const form = el("form");
  const params = op.parameters || [];
  for (const p of params) {
    form.append(el("label", {}, p.name + " (" + p.in + (p.required ? ", required" : "") + ")"));
    form.append(el("input", { name: p.in + ":" + p.name, placeholder: p.description || "" }));
  }
  if (op.requestBody) {
    form.append(el("label", {}, "JSON body"));
    form.append(el("textarea", { name: "body", rows: 8 }, "{}"));
  }
  form.append(el("label", {}, "Bearer token"), el("input", { name: "token" }));
  form.append(el("button", { type: "submit" }, "Send"));
  const out = el("pre");
  form.onsubmit = async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    let url = path;
    const query = new URLSearchParams();
    for (const p of params) {
      const value = data.get(p.in + ":" + p.name);
      if (!value) continue;
      if (p.in === "path") url = url.replace("{" + p.name + "}", encodeURIComponent(value));
      else query.append(p.name, value);
    }
    const headers = { "content-type": "application/json" };
    if (data.get("token")) headers.authorization = "Bearer " + data.get("token");
    const init = { method, headers };
    if (op.requestBody) init.body = data.get("body");
    const response = await fetch(url + (query.toString() ? "?" + query : ""), init);
    out.textContent = response.status + " " + response.statusText + "\\n\\n" + (await response.text());
  };
  main.append(form, out);
  const schema = op.requestBody && op.requestBody.content["application/json"].schema;
  if (schema) main.append(el("h3", {}, "Request schema"), el("pre", {}, JSON.stringify(schema, null, 2)));
}
fetch("/openapi.json").then((r) => r.json()).then((d) => {
  doc = d;
  document.getElementById("filter").oninput = renderList;
  renderList();
});
</script>
</body>
</html>
"""
