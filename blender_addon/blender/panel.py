"""The sidebar panels (3D Viewport > N > OccNet).

Order, top to bottom: the main panel (selection, Reconstruct, progress, Cancel, the last
outcome), the selected result's Live Surface sliders (right under it, so they are never below
the fold after a run), the settings of the *next* reconstruction, and the backend. Two sets of
Resolution/Threshold exist on purpose (the next run's, and the selected result's live ones): the
panel titles and group labels say which is which.
"""

from __future__ import annotations

import bpy

from ..runner import jobstate
from ..runner import installer
from . import export, jobs, preferences, results, sliders, ui

MAX_LISTED = 6


class OCCNET_PT_main(bpy.types.Panel):
    bl_label = "OccNet Reconstruction"
    bl_idname = "OCCNET_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "OccNet"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        prefs = preferences.prefs_struct(context)
        if installer.active() is not None or not (prefs and prefs.python_path) and preferences.backend_missing():
            preferences.draw_installer(layout, context, prefs, hint=True)  # no backend yet: the way to get one
        job = jobs.active_job()
        if job is not None:
            self._draw_running(layout, job)
        else:
            self._draw_selection(layout, context)
            row = layout.row()
            row.scale_y = 1.5
            row.operator("occnet.reconstruct", icon="MOD_REMESH")
        status = getattr(context.window_manager, "occnet_status", None)
        if job is None and status is not None and status.message:
            box = layout.box()
            ui.draw_message(box, context, status.message, icon="ERROR" if status.is_error else "INFO")
            if status.job_dir or status.log_path:
                box.operator("occnet.open_job_folder", icon="FILEBROWSER")

    def _draw_selection(self, layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
        selected = list(context.selected_objects)
        usable = export.usable_sources(selected)
        col = layout.column(align=True)
        if not usable:
            text = ("Selected: OccNet results only; select their sources to reconstruct again"
                    if any(results.is_result_object(ob) for ob in selected) else "Select mesh objects to reconstruct")
            ui.draw_message(col, context, text, icon="INFO")
            return
        col.label(text="Sources:")
        for ob in usable[:MAX_LISTED]:
            faces = f"{len(ob.data.polygons):,} faces" if ob.type == "MESH" else ob.type.lower()
            col.label(text=f"{ob.name}  ({faces})", icon="OUTLINER_OB_MESH" if ob.type == "MESH" else "OBJECT_DATA")
        if len(usable) > MAX_LISTED:
            col.label(text=f"... and {len(usable) - MAX_LISTED} more")
        skipped = len(selected) - len(usable)
        if skipped:
            col.label(text=f"{skipped} other selected object(s) will be skipped", icon="ERROR")
        if len(usable) > 1 and getattr(context.scene, "occnet", None) is not None:
            layout.prop(context.scene.occnet, "mode", expand=True)

    def _draw_running(self, layout: bpy.types.UILayout, job: "jobs.Job") -> None:
        state = job.state
        col = layout.column(align=True)
        names = ", ".join(s.shape_id for s in job.shapes)
        col.label(text=f"Reconstructing {names}", icon="MOD_REMESH")
        col.progress(factor=state.fraction if state.phase == "training" else (1.0 if state.phase in ("extracting", "done") else 0.0),
                     type="BAR", text=state.phase_text)
        grid = layout.grid_flow(columns=2, even_columns=True, align=True)
        grid.label(text=f"Loss: {state.loss:.4f}" if state.loss is not None else "Loss: -")
        grid.label(text=f"Batch IoU: {state.iou:.3f}" if state.iou is not None else "Batch IoU: -")
        grid.label(text=f"ETA: {jobstate.format_seconds(state.eta_s)}" if state.eta_s is not None else "ETA: -")
        grid.label(text=f"Device: {state.device or '...'}")
        row = layout.row()
        row.scale_y = 1.3
        if job.cancelling:
            row.operator("occnet.cancel", text="Cancelling... (press to kill)", icon="CANCEL")
        else:
            row.operator("occnet.cancel", text="Cancel (Esc)", icon="CANCEL")
        if job.previews_shown:
            layout.label(text="Wireframe: a preview, no network yet", icon="INFO")
            layout.label(text="(the learned surface replaces it)")


class OCCNET_PT_live(bpy.types.Panel):
    """Live sliders of the selected result: resolution, threshold, shape weights and A <-> B morph."""

    bl_label = "Selected Result: Live Surface"
    bl_idname = "OCCNET_PT_live"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "OccNet"
    bl_parent_id = "OCCNET_PT_main"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return sliders.is_result(context.active_object) and hasattr(context.active_object, "occnet_live")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        ob = context.active_object
        props = ob.occnet_live
        layout.label(text=ob.name, icon="MESH_DATA")
        if not props.ready:
            layout.operator("occnet.live_update", text="Set Up Sliders", icon="MODIFIER")
            return
        col = layout.column(align=True)
        col.label(text="Resolution")
        col.row(align=True).prop(props, "resolution", expand=True)
        col.separator()
        col.prop(props, "threshold", slider=True)
        if len(props.weights) > 1:
            box = layout.box()
            box.label(text="Shape Morph", icon="SHAPEKEY_DATA")
            row = box.row(align=True)
            row.prop(props, "morph_a", text="")
            row.label(text="", icon="FORWARD")
            row.prop(props, "morph_b", text="")
            box.prop(props, "morph", slider=True)
            sub = box.column(align=True)
            sub.label(text="Shape Weights (they sum to 1)")
            for item in props.weights:
                sub.prop(item, "value", text=item.name, slider=True)
            blend = sliders.blend_description(ob)
            if blend:
                ui.draw_message(box, context, blend, icon="INFO")
        st = sliders.status(ob)
        if st.state in ("pending", "updating"):
            layout.label(text=st.message or "Updating...", icon="SORTTIME")
        elif st.state == "error":
            ui.draw_message(layout.box(), context, st.message, icon="ERROR", max_lines=8)
        elif st.state == "ok":
            layout.label(text=st.message, icon="CHECKMARK")
        layout.operator("occnet.live_update", icon="FILE_REFRESH")


class OCCNET_PT_settings(bpy.types.Panel):
    bl_label = "Next Reconstruction: Settings"
    bl_idname = "OCCNET_PT_settings"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "OccNet"
    bl_parent_id = "OCCNET_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        props = getattr(context.scene, "occnet", None)
        if props is None:
            return
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.enabled = jobs.active_job() is None
        # column(heading=...) shows its heading only beside a checkbox row: plain labels instead
        layout.label(text="Training", icon="PLAY")
        col = layout.column(align=True)
        col.prop(props, "steps")
        col.prop(props, "points")
        col.prop(props, "cached_points")
        layout.label(text="Network", icon="NETWORK_DRIVE")
        layout.prop(props, "encoding")
        col = layout.column(align=True)
        col.active = props.encoding != "grid"
        col.prop(props, "width")
        col.prop(props, "depth")
        col.prop(props, "use_fourier")
        sub = col.column(align=True)
        sub.active = props.use_fourier
        sub.prop(props, "fourier_frequencies")
        layout.label(text="Surface of the new result", icon="MESH_ICOSPHERE")
        col = layout.column(align=True)
        col.prop(props, "resolution")
        col.prop(props, "threshold")
        layout.label(text="After the run", icon="HIDE_OFF")
        layout.prop(props, "hide_sources")
        prefs = preferences.prefs_struct(context)
        if prefs is not None:
            layout.prop(prefs, "device")


class OCCNET_PT_backend(bpy.types.Panel):
    bl_label = "Backend"
    bl_idname = "OCCNET_PT_backend"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "OccNet"
    bl_parent_id = "OCCNET_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        prefs = preferences.prefs_struct(context)
        if prefs is None:
            layout.label(text="Enable the add-on to edit its preferences")
        else:
            layout.prop(prefs, "python_path", text="Python")
            layout.prop(prefs, "work_dir", text="Work Folder")
        layout.operator("occnet.check_backend", icon="CHECKMARK")
        if prefs is not None and prefs.check_result:
            ui.draw_message(layout.box(), context, prefs.check_result)
        layout.operator("occnet.clean_job_folders", icon="TRASH")


classes = (OCCNET_PT_main, OCCNET_PT_live, OCCNET_PT_settings, OCCNET_PT_backend)


register, unregister = bpy.utils.register_classes_factory(classes)
