// Job pages: live updates without reloading, the mini-batch table's pages, Cancel and Resume.
(function () {
  "use strict";
  const token = new URLSearchParams(window.location.search).get("token") || "";
  const headers = { "Authorization": "Bearer " + token };
  const job = document.getElementById("job");
  if (!job) { return; }
  const table = document.getElementById("table");
  const message = document.getElementById("action-message");
  let timer = null;
  let lastTable = 0;
  let tableAsked = 0;  // the newest table request: an older answer arriving after it is dropped

  function loadTable(src) {
    if (!table) { return Promise.resolve(); }
    src = src || table.dataset.src;
    lastTable = Date.now();
    const asked = ++tableAsked;
    return fetch(src, { headers: headers }).then(function (r) { return r.text(); }).then(function (html) {
      if (asked !== tableAsked) { return; }
      table.innerHTML = html;
      table.dataset.src = src;
    });
  }

  function tick() {
    timer = null;
    fetch(job.dataset.live, { headers: Object.assign({ "Accept": "application/json" }, headers) })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        if (!data.html) { throw new Error((data.error && data.error.message) || "no data"); }
        Object.keys(data.html).forEach(function (id) {
          const el = document.getElementById(id);
          if (el) { el.innerHTML = data.html[id]; }
        });
        job.dataset.final = data.final ? "true" : "false";
        if (data.final) {
          loadTable();
        } else {
          if (Date.now() - lastTable > 3000) { loadTable(); }
          timer = setTimeout(tick, 1000);
        }
      })
      .catch(function () { timer = setTimeout(tick, 3000); });
  }

  document.addEventListener("click", function (e) {
    const link = e.target.closest("[data-table-src]");
    if (link) {
      e.preventDefault();
      loadTable(link.dataset.tableSrc);
      return;
    }
    const button = e.target.closest("button[data-action]");
    if (button && !button.disabled) {
      button.disabled = true;
      message.textContent = button.textContent + "…";
      fetch(button.dataset.action, { method: "POST", headers: Object.assign({ "Accept": "application/json" }, headers) })
        .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
        .then(function (res) {
          message.textContent = res.ok ? (button.textContent + ": job is " + res.body.status)
                                       : ("error: " + res.body.error.message);
          if (timer) { clearTimeout(timer); }
          tick();
        })
        .catch(function (err) { message.textContent = "error: " + err; button.disabled = false; });
    }
  });

  tick();
  loadTable();
})();
