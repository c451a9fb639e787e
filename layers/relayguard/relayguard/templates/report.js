// The fleet report's own script: filter and sort the server table in the page, nothing else.
// It reads and moves the server-rendered rows and sets only textContent and attributes, never HTML.
(function () {
  "use strict";
  var table = document.getElementById("servers");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var filter = document.getElementById("filter");
  var group = document.getElementById("group");
  var shown = document.getElementById("shown");
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);

  function apply() {
    var needle = filter.value.trim().toLowerCase();
    var wanted = group.value;
    var count = 0;
    rows.forEach(function (row) {
      var match = (!needle || row.textContent.toLowerCase().indexOf(needle) !== -1) &&
        (!wanted || row.getAttribute("data-group") === wanted || row.getAttribute("data-outcome") === wanted);
      row.hidden = !match;
      if (match) { count += 1; }
    });
    shown.textContent = String(count);
  }

  function key(row, index) {
    var cell = row.cells[index];
    var sort = cell.getAttribute("data-sort");
    return sort === null ? cell.textContent.trim() : sort;
  }

  function sortBy(index) {
    var th = headers[index];
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var numeric = th.getAttribute("data-type") === "number";
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = key(a, index);
      var y = key(b, index);
      var order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      if (!ascending) { order = -order; }
      // Ties keep the page's own order: failures first.
      return order || Number(a.getAttribute("data-index")) - Number(b.getAttribute("data-index"));
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  headers.forEach(function (th, index) {
    var button = th.querySelector("button");
    if (button) { button.addEventListener("click", function () { sortBy(index); }); }
  });
  filter.addEventListener("input", apply);
  group.addEventListener("change", apply);
  Array.prototype.forEach.call(document.querySelectorAll("#chart .bar"), function (bar) {
    bar.addEventListener("click", function () {
      group.value = bar.getAttribute("data-outcome");
      apply();
    });
  });
  apply();
}());
